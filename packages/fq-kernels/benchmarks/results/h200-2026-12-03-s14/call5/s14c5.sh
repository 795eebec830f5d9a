#!/usr/bin/env bash
# Session 14, call 5: 7B prefill, its profile, the linear-layer table (tq share) and decode with the
# new transform_quant (reciprocal+FMA quotient, 8 warps / 128 registers on large tiles). Into $OUT.
set -uo pipefail
export PIP_NO_INDEX=1 PYTHONUNBUFFERED=1 TRITON_CACHE_DIR=/tmp/tc
python3 -m pip install -q --no-deps --no-build-isolation -e packages/fq-core -e packages/fq-calib \
    -e packages/fq-eval -e packages/fq-kernels > /dev/null 2>&1
E2E="packages/fq-eval/benchmarks/e2e.py --shape llama-2-7b --prefill-batches '' --hf-batches '' --fit-context 0"
date -u +%T > $OUT/log.txt
timeout 80 bash -c "python3 $E2E --static-prefill-batches 1 --decode-batches '' --repeats 3 --out /tmp/p1" \
    > $OUT/prefill.txt 2>&1; date -u +%T >> $OUT/log.txt
timeout 80 bash -c "python3 $E2E --static-prefill-batches 1 --decode-batches '' --models w4a4kv4 --profile /tmp/prof" \
    > $OUT/profile.txt 2>&1; date -u +%T >> $OUT/log.txt
timeout 120 python3 packages/fq-kernels/benchmarks/kernels_table.py --out /tmp/table \
    --shapes 4096x11008,4096x14336,11008x4096 --tokens 2048 > $OUT/table.txt 2>&1; date -u +%T >> $OUT/log.txt
timeout 100 bash -c "python3 $E2E --static-prefill-batches '' --decode-batches 1,16 --out /tmp/d1" \
    > $OUT/decode.txt 2>&1; date -u +%T >> $OUT/log.txt
tar czf $OUT/json.tgz /tmp/p1 /tmp/prof /tmp/table /tmp/d1 2>/dev/null
