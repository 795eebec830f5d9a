#!/usr/bin/env bash
# One device call's worth of GPU checks and measurements for fq-kernels and the int4 runtime, each
# stage under its own time limit so one hang costs only its stage. Results go to $OUT/r.tgz, one
# file (the device tool brings back at most 8). Run from the repository root:
#
#   STAGES="tests table e2e" bash packages/fq-kernels/benchmarks/device_run.sh
#
# Stages (each within its own limit, $<STAGE>_TIMEOUT s where set): tests (pytest -m gpu over $TEST_FILES, $TESTS selects), fuzz (the 200-shape GEMM fuzz, its
# 8 chunks in parallel processes), tune ($SECTIONS of tune_kernels.py at $TOKENS), table
# (kernels_table.py at $TOKENS), e2e (7B FP16 / FP8 / W4A4KV4: static-loop prompt 1 x 2048, graph
# decode at batch 1 and 16, memory, largest batch at 4096 and 32768 tokens), profile (the prompt's
# and decode steps' per-kernel tables). $SHAPES: the linear shapes of tune and table; $E2E_EXTRA: more e2e.py options.
set -uo pipefail
OUT=${OUT:-device-out}
R=$(mktemp -d)/r
mkdir -p "$R" "$OUT"
STAGES=${STAGES:-"tests table e2e"}
TESTS=${TESTS:-"tiles_candidate or swiglu or graph_decode or prefill_graph or perplexity or quant_linear or gemm_matches or adversarial"}
SECTIONS=${SECTIONS:-"baseline,tiles"}
TOKENS=${TOKENS:-"1,16,64,256,512,2048"}
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
E2E="packages/fq-eval/benchmarks/e2e.py --shape llama-2-7b --prefill-batches '' --hf-batches ''"
for s in $STAGES; do
    stage "$s"
    case $s in
        tests) timeout ${TESTS_TIMEOUT:-300} python3 -m pytest -q -m gpu $TEST_FILES -k "$TESTS" \
            > "$R/tests.txt" 2>&1; tail -3 "$R/tests.txt" ;;
        fuzz) for c in 0 1 2 3 4 5 6 7; do
                timeout 330 python3 -m pytest -q -m gpu "packages/fq-kernels/tests/test_kernels_gpu.py::test_gemm_fuzz_200_shapes[$c]" \
                    > "$R/fuzz$c.txt" 2>&1 &
            done; wait; tail -qn 1 "$R"/fuzz*.txt ;;
        tune) timeout 300 python3 packages/fq-kernels/benchmarks/tune_kernels.py --out "$R/tune" --workers 14 \
            --sections "$SECTIONS" --tokens "$TOKENS" --shapes "$SHAPES,4096x22016" > "$R/tune.txt" 2>&1; tail -24 "$R/tune.txt" ;;
        table) timeout ${TABLE_TIMEOUT:-200} python3 packages/fq-kernels/benchmarks/kernels_table.py --out "$R/table" --shapes "$SHAPES" \
            --tokens "$TOKENS" > "$R/table.txt" 2>&1; grep -A40 "^| K x N" "$R/table.txt" ;;
        e2e) timeout ${E2E_TIMEOUT:-330} bash -c "python3 $E2E --static-prefill-batches 1 --decode-batches 1,16 \
            --fit-context 4096,32768 ${E2E_EXTRA:-} --out $R/e2e" > "$R/e2e.txt" 2>&1; grep -v "^\[" "$R/e2e.txt" | tail -32 ;;
        profile) timeout 120 bash -c "python3 $E2E --static-prefill-batches 1 --decode-batches 1,16 \
            --models w4a4kv4,fp8,fp16 --profile $R/profile" > "$R/profile.txt" 2>&1 ;;
        *) echo "unknown stage $s" ;;
    esac
done
stage done
tar czf "$OUT/r.tgz" -C "$(dirname "$R")" r && echo "results: $OUT/r.tgz"
