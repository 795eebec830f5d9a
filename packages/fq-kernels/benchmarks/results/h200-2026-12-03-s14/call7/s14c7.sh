#!/usr/bin/env bash
# Session 14, call 7: GPU tests of transform_quant after the tokens-per-step / one-clamp change, the tq
# sweep (tokens candidates) at M = 2048, the linear-layer table with the autotuner on. Into $OUT.
set -uo pipefail
export PIP_NO_INDEX=1 PYTHONUNBUFFERED=1 TRITON_CACHE_DIR=/tmp/tc
python3 -m pip install -q --no-deps --no-build-isolation -e packages/fq-core -e packages/fq-calib \
    -e packages/fq-eval -e packages/fq-kernels > /dev/null 2>&1
date -u +%T > $OUT/log.txt
timeout 100 python3 packages/fq-kernels/benchmarks/tune_kernels.py --out /tmp/tune --workers 14 --sections tq \
    --tokens 2048 --shapes 4096x11008,11008x4096 > $OUT/tune.txt 2>&1; cp /tmp/tune/tune.jsonl $OUT/; date -u +%T >> $OUT/log.txt
FQ_KERNELS_AUTOTUNE=1 timeout 110 python3 packages/fq-kernels/benchmarks/kernels_table.py --out $OUT/table \
    --shapes 4096x11008,4096x14336,11008x4096 --tokens 2048 > $OUT/table.txt 2>&1; date -u +%T >> $OUT/log.txt
timeout 120 python3 -m pytest -q -m gpu packages/fq-kernels/tests/test_kernels_gpu.py -k \
    "quantize_without or exact_transforms_are or (bit_exact_on_exact and (33 or 300)) or non_finite" > $OUT/tests.txt 2>&1
date -u +%T >> $OUT/log.txt
