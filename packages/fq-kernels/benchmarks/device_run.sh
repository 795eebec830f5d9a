#!/usr/bin/env bash
# One device call's worth of GPU checks and measurements for fq-kernels and the int4 runtime, each
# stage under its own time limit so one hang costs only its stage. Results go to $OUT/r.tgz, one
# file (the device tool brings back at most 8). Run from the repository root:
#
#   STAGES="tests prefill profile decode" bash packages/fq-kernels/benchmarks/device_run.sh
#
# Stages: tests (pytest -m gpu over $TEST_FILES, $TESTS selects), tune ($SECTIONS of tune_kernels.py at M = 2048),
# table (kernels_table.py at M = 2048), prefill (7B static-loop prompt, int4 and FP16), profile
# (its per-kernel table), decode (7B batch 1 and 16). $SHAPES: the linear shapes of tune and table.
set -uo pipefail
OUT=${OUT:-device-out}
R=$(mktemp -d)/r
mkdir -p "$R" "$OUT"
STAGES=${STAGES:-"tests tune table prefill profile decode"}
TESTS=${TESTS:-"rope_map or quant_kv_into or swiglu or every_prefill_candidate or graph_decode or prefill_graph or perplexity or quant_linear"}
SECTIONS=${SECTIONS:-"baseline,prefill,swiglu"}
SHAPES=${SHAPES:-"4096x11008,4096x14336,11008x4096"}
TEST_FILES=${TEST_FILES:-packages/fq-kernels/tests/test_kernels_gpu.py}
export PIP_NO_INDEX=1 PYTHONUNBUFFERED=1 TRITON_CACHE_DIR=${TRITON_CACHE_DIR:-/tmp/tc}
python3 -m pip install -q --no-deps --no-build-isolation -e packages/fq-core -e packages/fq-calib \
    -e packages/fq-eval -e packages/fq-kernels > "$R/install.txt" 2>&1 || echo "install failed: $R/install.txt"
{
    nvidia-smi --query-gpu=name,driver_version --format=csv
    python3 -c "import torch, triton, transformers; print(torch.__version__, triton.__version__, transformers.__version__)"
} > "$R/gpu.txt" 2>&1
stage() { echo "$(date -u +%H:%M:%S) $1" | tee -a "$R/stages.txt"; }
E2E="packages/fq-eval/benchmarks/e2e.py --shape llama-2-7b --prefill-batches '' --hf-batches '' --fit-context 0"
for s in $STAGES; do
    stage "$s"
    case $s in
        tests) timeout 300 python3 -m pytest -q -m gpu $TEST_FILES -k "$TESTS" \
            > "$R/tests.txt" 2>&1; tail -3 "$R/tests.txt" ;;
        tune) timeout 200 python3 packages/fq-kernels/benchmarks/tune_kernels.py --out "$R/tune" --workers 8 \
            --sections "$SECTIONS" --tokens 2048 --shapes "$SHAPES,4096x22016" > "$R/tune.txt" 2>&1; tail -20 "$R/tune.txt" ;;
        table) timeout 120 python3 packages/fq-kernels/benchmarks/kernels_table.py --out "$R/table" --shapes "$SHAPES" \
            --tokens 2048 > "$R/table.txt" 2>&1; tail -12 "$R/table.txt" ;;
        prefill) timeout 90 bash -c "python3 $E2E --static-prefill-batches 1 --decode-batches '' --repeats 3 \
            --out $R/prefill" > "$R/prefill.txt" 2>&1; tail -8 "$R/prefill.txt" ;;
        profile) timeout 120 bash -c "python3 $E2E --static-prefill-batches 1 --decode-batches 1,16 \
            --models w4a4kv4,fp16 --profile $R/profile" > "$R/profile.txt" 2>&1 ;;
        decode) timeout 200 bash -c "python3 $E2E --static-prefill-batches '' --decode-batches 1,16 \
            --out $R/decode" > "$R/decode.txt" 2>&1; tail -6 "$R/decode.txt" ;;
        *) echo "unknown stage $s" ;;
    esac
done
stage done
tar czf "$OUT/r.tgz" -C "$(dirname "$R")" r && echo "results: $OUT/r.tgz"
