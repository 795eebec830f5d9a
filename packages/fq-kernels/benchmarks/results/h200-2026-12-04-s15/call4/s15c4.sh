#!/usr/bin/env bash
# Session 15, call 4: the layer table with row-major benchmark factors (as QuantLinear holds them),
# the rest of the transform_quant GPU tests. Into $OUT.
set -uo pipefail
export PIP_NO_INDEX=1 PYTHONUNBUFFERED=1 TRITON_CACHE_DIR=/tmp/tc
python3 -m pip install -q --no-deps --no-build-isolation -e packages/fq-core -e packages/fq-calib \
    -e packages/fq-eval -e packages/fq-kernels > /dev/null 2>&1
mkdir -p /tmp/o; date -u +%T > $OUT/log.txt
timeout 75 python3 packages/fq-kernels/benchmarks/kernels_table.py --out /tmp/o/table \
    --shapes 4096x11008,4096x14336,11008x4096 --tokens 1,16,2048 > $OUT/table.txt 2>&1
tar czf $OUT/runs.tgz -C /tmp o; date -u +%T >> $OUT/log.txt
timeout 45 python3 -m pytest -q -m gpu packages/fq-kernels/tests/test_kernels_gpu.py -k \
    "heads_transform or non_finite or factors_in" > $OUT/tests.txt 2>&1; date -u +%T >> $OUT/log.txt
