#!/usr/bin/env bash
# Session 14, call 1: transform_quant sweep (right_first vs fused) at M = 2048 / 16, 7B prefill with the
# default and with the sweep's best tq config per tile, profile of the latter. Straight into $OUT.
set -uo pipefail
export PIP_NO_INDEX=1 PYTHONUNBUFFERED=1 TRITON_CACHE_DIR=/tmp/tc
python3 -m pip install -q --no-deps --no-build-isolation -e packages/fq-core -e packages/fq-calib \
    -e packages/fq-eval -e packages/fq-kernels > /dev/null 2>&1
{ nvidia-smi --query-gpu=name,driver_version --format=csv
  python3 -c "import torch, triton, transformers; print(torch.__version__, triton.__version__, transformers.__version__)"; } > $OUT/gpu.txt 2>&1
E2E="packages/fq-eval/benchmarks/e2e.py --shape llama-2-7b --prefill-batches '' --hf-batches '' --fit-context 0"
date -u +%T > $OUT/log.txt
timeout 150 python3 packages/fq-kernels/benchmarks/tune_kernels.py --out /tmp/tune --workers 14 --sections tq --tokens 16,2048 \
    --shapes 4096x11008,11008x4096,14336x4096 > $OUT/tune.txt 2>&1; cp /tmp/tune/tune.jsonl $OUT/tune.jsonl; date -u +%T >> $OUT/log.txt
timeout 70 bash -c "python3 $E2E --static-prefill-batches 1 --decode-batches '' --repeats 3 --out /tmp/p1" \
    > $OUT/prefill.txt 2>&1; date -u +%T >> $OUT/log.txt
cat > /tmp/best.py <<'PY'
import json, runpy, sys
from fq_kernels._runtime import next_pow2
from fq_core.transforms.kronecker import kron_factors
from fq_kernels.triton import transform_quant as tqm
rows = [json.loads(line) for line in open("/tmp/tune/tune.jsonl")]
rows = [r for r in rows if r["section"] == "tq" and r["m"] == 2048 and "error" not in r]
best = {}
for r in rows:
    n1, n2 = kron_factors(r["k"])
    key = (next_pow2(n1), next_pow2(n2))
    if key not in best or r["median_ms"] < best[key]["median_ms"]:
        best[key] = r
for key, r in best.items():
    print("best tq at tile", key, "K", r["k"], r["cfg"], r["median_ms"], "default", tqm.candidates(*key)[0], flush=True)
default = tqm.candidates
tqm.candidates = lambda b1, b2: [tqm.TQConfig(**best[(b1, b2)]["cfg"])] if (b1, b2) in best else default(b1, b2)
sys.argv = ["e2e.py", "--shape", "llama-2-7b", "--prefill-batches", "", "--hf-batches", "", "--fit-context", "0",
            "--static-prefill-batches", "1", "--decode-batches", ""] + sys.argv[1:]
runpy.run_path("packages/fq-eval/benchmarks/e2e.py", run_name="__main__")
PY
timeout 70 python3 /tmp/best.py --repeats 3 --out /tmp/p2 > $OUT/prefill_best.txt 2>&1; date -u +%T >> $OUT/log.txt
timeout 90 python3 /tmp/best.py --models w4a4kv4 --profile /tmp/prof > $OUT/profile.txt 2>&1; date -u +%T >> $OUT/log.txt
tar czf $OUT/json.tgz /tmp/p1 /tmp/p2 /tmp/prof 2>/dev/null
