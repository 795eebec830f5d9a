#!/bin/bash
# session 12, device call 1: validate the fp8 library GEMM + KV views + static loop; sweep; layer table; e2e prefill
export PIP_NO_INDEX=1 TRITON_CACHE_DIR=/tmp/tc PYTHONUNBUFFERED=1
R=$OUT/r; mkdir -p $R
nvidia-smi --query-gpu=name,driver_version --format=csv > $R/gpu.txt
python3 -c "import torch, triton, transformers; print(torch.__version__, triton.__version__, transformers.__version__)" >> $R/gpu.txt
python3 -m pip install -q --no-deps --no-build-isolation -e packages/fq-core -e packages/fq-calib -e packages/fq-eval -e packages/fq-kernels > /dev/null 2>&1 || echo INSTALL FAILED
date >> $R/gpu.txt
timeout 200 python3 -m pytest -q -m gpu packages/fq-kernels/tests/test_kernels_gpu.py -k "every_prefill_candidate or kv or graph_decode or prefill_graph" 2>&1 | tail -25 > $R/t_gpu.txt; tail -3 $R/t_gpu.txt
date >> $R/gpu.txt
S=4096x11008,4096x14336,11008x4096
timeout 150 python3 packages/fq-kernels/benchmarks/tune_kernels.py --out $R/tune --workers 8 --sections baseline,prefill --tokens 2048 --shapes $S > $R/tune.txt 2>&1; tail -30 $R/tune.txt
date >> $R/gpu.txt
FQ_KERNELS_AUTOTUNE=1 timeout 100 python3 packages/fq-kernels/benchmarks/kernels_table.py --out $R/bench --shapes $S --tokens 2048 --prefill fp8 > $R/table.txt 2>&1; tail -20 $R/table.txt
date >> $R/gpu.txt
E="--shape llama-2-7b --prefill-batches '' --static-prefill-batches 1 --hf-batches '' --decode-batches '' --fit-context 0 --repeats 3"
timeout 60 bash -c "python3 packages/fq-eval/benchmarks/e2e.py $E --out $R/e2e_int8" > $R/e2e_int8.txt 2>&1; tail -6 $R/e2e_int8.txt
timeout 60 bash -c "python3 .devrun/fp8.py $E --models w4a4kv4 --out $R/e2e_fp8" > $R/e2e_fp8.txt 2>&1; tail -6 $R/e2e_fp8.txt
timeout 60 bash -c "python3 .devrun/fp8.py $E --models w4a4kv4 --profile $R/prof_fp8" > /dev/null 2>&1
timeout 60 bash -c "python3 packages/fq-eval/benchmarks/e2e.py $E --models w4a4kv4 --profile $R/prof_int8" > /dev/null 2>&1
date >> $R/gpu.txt
cd $OUT && tar czf r.tgz r && rm -rf r
