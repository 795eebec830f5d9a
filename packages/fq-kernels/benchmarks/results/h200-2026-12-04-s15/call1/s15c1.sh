#!/usr/bin/env bash
# Session 15, call 1: GPU tests of every activation / KV quantiser and graph decode (session 14's
# untimed instruction cuts), the tq sweep at 16 / 2048 tokens, the layer table at 1 / 16 / 2048 tokens
# (autotuner on), 7B static prefill and decode. Straight into $OUT.
set -uo pipefail
export PIP_NO_INDEX=1 PYTHONUNBUFFERED=1 TRITON_CACHE_DIR=/tmp/tc
python3 -m pip install -q --no-deps --no-build-isolation -e packages/fq-core -e packages/fq-calib \
    -e packages/fq-eval -e packages/fq-kernels > /dev/null 2>&1
{ nvidia-smi --query-gpu=name,driver_version --format=csv
  python3 -c "import torch, triton, transformers; print(torch.__version__, triton.__version__, transformers.__version__)"; } > $OUT/gpu.txt 2>&1
E2E="packages/fq-eval/benchmarks/e2e.py --shape llama-2-7b --prefill-batches '' --hf-batches '' --fit-context 0"
mkdir -p /tmp/o; pack() { tar czf $OUT/runs.tgz -C /tmp o; }
date -u +%T > $OUT/log.txt
timeout 60 python3 packages/fq-kernels/benchmarks/tune_kernels.py --out /tmp/tune --workers 14 --sections tq --tokens 16,2048 \
    --shapes 4096x11008,11008x4096 > $OUT/tune.txt 2>&1; cp /tmp/tune/tune.jsonl $OUT/tune.jsonl; pack; date -u +%T >> $OUT/log.txt
FQ_KERNELS_AUTOTUNE=1 timeout 150 python3 packages/fq-kernels/benchmarks/kernels_table.py --out /tmp/o/table \
    --shapes 4096x11008,4096x14336,11008x4096 --tokens 1,16,2048 > $OUT/table.txt 2>&1; pack; date -u +%T >> $OUT/log.txt
timeout 60 bash -c "python3 $E2E --static-prefill-batches 1 --decode-batches '' --repeats 3 --out /tmp/o/prefill" \
    > /tmp/o/prefill.txt 2>&1; pack; date -u +%T >> $OUT/log.txt
timeout 70 bash -c "python3 $E2E --static-prefill-batches '' --decode-batches 1,16 --repeats 3 --out /tmp/o/decode" \
    > /tmp/o/decode.txt 2>&1; pack; date -u +%T >> $OUT/log.txt
timeout 200 python3 -m pytest -q -m gpu packages/fq-kernels/tests/test_kernels_gpu.py -k \
    "quantize or transform or activation or heads or quant_kv or non_finite or quant_linear or graph_decode" > $OUT/tests.txt 2>&1
pack; date -u +%T >> $OUT/log.txt
