#!/usr/bin/env bash
# Session 15, call 3: GPU tests of the activation quantisers (16-bit factors passed as they are, fp8
# rounding add), tqfactors.py, the layer table and 7B prefill / decode with the new defaults
# (transform_quant: 4 programs per SM on 64 x 64 tiles, 2 on large ones). Into $OUT.
set -uo pipefail
export PIP_NO_INDEX=1 PYTHONUNBUFFERED=1 TRITON_CACHE_DIR=/tmp/tc
python3 -m pip install -q --no-deps --no-build-isolation -e packages/fq-core -e packages/fq-calib \
    -e packages/fq-eval -e packages/fq-kernels > /dev/null 2>&1
mkdir -p /tmp/o; pack() { tar czf $OUT/runs.tgz -C /tmp o; }
date -u +%T > $OUT/log.txt
timeout 90 python3 -m pytest -q -m gpu packages/fq-kernels/tests/test_kernels_gpu.py -k \
    "factors_in or quantize_without or exact_transforms_are or non_finite or heads_transform or orthogonal_transforms" > $OUT/tests.txt 2>&1
date -u +%T >> $OUT/log.txt
timeout 60 python3 .devrun/tqfactors.py > $OUT/tqfactors.txt 2>&1; date -u +%T >> $OUT/log.txt
timeout 80 python3 packages/fq-kernels/benchmarks/kernels_table.py --out /tmp/o/table \
    --shapes 4096x11008,4096x14336,11008x4096 --tokens 1,16,2048 > $OUT/table.txt 2>&1; pack; date -u +%T >> $OUT/log.txt
E2E="packages/fq-eval/benchmarks/e2e.py --shape llama-2-7b --prefill-batches '' --hf-batches '' --fit-context 0 --repeats 3"
timeout 45 bash -c "python3 $E2E --static-prefill-batches 1 --decode-batches '' --out /tmp/o/prefill" \
    > /tmp/o/prefill.txt 2>&1; pack; date -u +%T >> $OUT/log.txt
timeout 60 bash -c "python3 $E2E --static-prefill-batches '' --decode-batches 1,16 --out /tmp/o/decode" \
    > /tmp/o/decode.txt 2>&1; pack; date -u +%T >> $OUT/log.txt
