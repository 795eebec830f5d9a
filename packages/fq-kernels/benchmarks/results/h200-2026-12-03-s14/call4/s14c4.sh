#!/usr/bin/env bash
# Session 14, call 4: transform_quant sweep after the reciprocal+FMA quotient, GPU tests of every
# activation / KV quantiser (bit-exactness of the new quotient on CUDA). Straight into $OUT.
set -uo pipefail
export PIP_NO_INDEX=1 PYTHONUNBUFFERED=1 TRITON_CACHE_DIR=/tmp/tc
python3 -m pip install -q --no-deps --no-build-isolation -e packages/fq-core -e packages/fq-calib \
    -e packages/fq-eval -e packages/fq-kernels > /dev/null 2>&1
date -u +%T > $OUT/log.txt
timeout 200 python3 packages/fq-kernels/benchmarks/results/h200-2026-12-03-s14/call4/tqsweep.py > $OUT/tqsweep.txt 2>&1; date -u +%T >> $OUT/log.txt
timeout 240 python3 -m pytest -q -m gpu packages/fq-kernels/tests/test_kernels_gpu.py -k \
    "quantize or transform or activation or heads or quant_kv or non_finite or quant_linear" > $OUT/tests.txt 2>&1
date -u +%T >> $OUT/log.txt
