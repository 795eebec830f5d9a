#!/bin/bash
export PIP_NO_INDEX=1 TRITON_CACHE_DIR=/tmp/tc PYTHONUNBUFFERED=1
python3 -m pip install -q --no-deps --no-build-isolation -e packages/fq-core -e packages/fq-kernels > /dev/null 2>&1 || echo INSTALL FAILED
timeout 150 python3 .devrun/glu.py 2>&1 | tee $OUT/glu.txt
