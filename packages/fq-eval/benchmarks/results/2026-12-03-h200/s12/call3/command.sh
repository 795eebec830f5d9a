#!/bin/bash
# session 12, device call 3: SwiGLU as two half-width dots (tests, prefill, profile, decode)
export PIP_NO_INDEX=1 TRITON_CACHE_DIR=/tmp/tc PYTHONUNBUFFERED=1
R=$OUT/r; mkdir -p $R
python3 -m pip install -q --no-deps --no-build-isolation -e packages/fq-core -e packages/fq-calib -e packages/fq-eval -e packages/fq-kernels > /dev/null 2>&1 || echo INSTALL FAILED
date > $R/dates.txt
E="--shape llama-2-7b --prefill-batches '' --static-prefill-batches 1 --hf-batches '' --decode-batches '' --fit-context 0 --repeats 3"
timeout 60 bash -c "python3 packages/fq-eval/benchmarks/e2e.py $E --out $R/e2e_pre" > $R/e2e_pre.txt 2>&1; tail -4 $R/e2e_pre.txt
timeout 45 bash -c "python3 packages/fq-eval/benchmarks/e2e.py $E --models w4a4kv4 --profile $R/prof" > $R/prof.txt 2>&1
date >> $R/dates.txt
date >> $R/dates.txt
timeout 260 python3 -m pytest -q -m gpu packages/fq-kernels/tests/test_kernels_gpu.py -k "swiglu or graph_decode or prefill_graph or perplexity or every_prefill_candidate" 2>&1 | tail -25 > $R/t_gpu.txt; tail -3 $R/t_gpu.txt
date >> $R/dates.txt
D="--shape llama-2-7b --prefill-batches '' --static-prefill-batches '' --hf-batches '' --decode-batches 1,16 --fit-context 0"
timeout 150 bash -c "python3 packages/fq-eval/benchmarks/e2e.py $D --out $R/e2e_dec" > $R/e2e_dec.txt 2>&1; tail -6 $R/e2e_dec.txt
date >> $R/dates.txt
cd $OUT && tar czf r.tgz r && rm -rf r
