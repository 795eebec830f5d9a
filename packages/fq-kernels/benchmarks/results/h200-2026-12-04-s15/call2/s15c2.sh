#!/usr/bin/env bash
# Session 15, call 2: sweep15.py (tq at 2048 tokens, decode GEMM stages in the overlapped layer), the
# layer table and the 7B prefill / decode with the sweep's best (patch15.py), GPU tests of the
# activation quantisers (fp8 codes now rounded by the 1.5 * 2^23 add). Into $OUT.
set -uo pipefail
export PIP_NO_INDEX=1 PYTHONUNBUFFERED=1 TRITON_CACHE_DIR=/tmp/tc
python3 -m pip install -q --no-deps --no-build-isolation -e packages/fq-core -e packages/fq-calib \
    -e packages/fq-eval -e packages/fq-kernels > /dev/null 2>&1
mkdir -p /tmp/o; pack() { tar czf $OUT/runs.tgz -C /tmp o; }
date -u +%T > $OUT/log.txt
timeout 200 python3 .devrun/sweep15.py $OUT > $OUT/sweep.txt 2>&1; date -u +%T >> $OUT/log.txt
export BEST=$OUT/best.json
timeout 110 python3 .devrun/patch15.py packages/fq-kernels/benchmarks/kernels_table.py --out /tmp/o/table \
    --shapes 4096x11008,4096x14336,11008x4096 --tokens 1,16,2048 > $OUT/table.txt 2>&1; pack; date -u +%T >> $OUT/log.txt
E2E="packages/fq-eval/benchmarks/e2e.py --shape llama-2-7b --prefill-batches '' --hf-batches '' --fit-context 0 --repeats 3"
timeout 45 bash -c "python3 .devrun/patch15.py $E2E --static-prefill-batches 1 --decode-batches '' --out /tmp/o/prefill" \
    > /tmp/o/prefill.txt 2>&1; pack; date -u +%T >> $OUT/log.txt
timeout 60 bash -c "python3 .devrun/patch15.py $E2E --static-prefill-batches '' --decode-batches 1,16 --out /tmp/o/decode" \
    > /tmp/o/decode.txt 2>&1; pack; date -u +%T >> $OUT/log.txt
timeout 90 python3 -m pytest -q -m gpu packages/fq-kernels/tests/test_kernels_gpu.py -x -k \
    "quantize_without or exact_transforms_are or non_finite or heads_transform" > $OUT/tests.txt 2>&1
pack; date -u +%T >> $OUT/log.txt
