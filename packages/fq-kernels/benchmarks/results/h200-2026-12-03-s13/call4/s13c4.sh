#!/usr/bin/env bash
# Session 13, call 4: rope_map sweep, 7B prefill (default, and with the sweep's best rope config if
# it differs), GPU tests, decode. Writes straight into $OUT (a timeout keeps what is done).
set -uo pipefail
export PIP_NO_INDEX=1 PYTHONUNBUFFERED=1 TRITON_CACHE_DIR=/tmp/tc
python3 -m pip install -q --no-deps --no-build-isolation -e packages/fq-core -e packages/fq-calib \
    -e packages/fq-eval -e packages/fq-kernels > /dev/null 2>&1
E2E="packages/fq-eval/benchmarks/e2e.py --shape llama-2-7b --prefill-batches '' --hf-batches '' --fit-context 0"
date -u +%T > $OUT/log.txt
timeout 90 python3 packages/fq-kernels/benchmarks/tune_kernels.py --out /tmp/tune --workers 14 --sections rope \
    > $OUT/tune.txt 2>&1; cp /tmp/tune/tune.jsonl $OUT/tune.jsonl; date -u +%T >> $OUT/log.txt
timeout 70 bash -c "python3 $E2E --static-prefill-batches 1 --decode-batches '' --repeats 3 --out /tmp/p1" \
    > $OUT/prefill.txt 2>&1; date -u +%T >> $OUT/log.txt
timeout 70 python3 - > $OUT/prefill_best.txt 2>&1 <<'PY'
import json, runpy, sys
rows = [json.loads(line) for line in open("/tmp/tune/tune.jsonl")]
rows = [r for r in rows if r["section"] == "rope" and r["mapped"] and r["h"] == 32 and "error" not in r]
best = min(rows, key=lambda r: r["median_ms"])
from fq_kernels.triton import rope
cfg = rope.RopeConfig(**best["cfg"])
print("best mapped rope config at 32 heads:", cfg, "default:", rope.candidates(2048)[0], flush=True)
if cfg != rope.candidates(2048)[0]:
    default = rope.candidates
    rope.candidates = lambda rows: [cfg] if rows >= 256 else default(rows)
    sys.argv = ["e2e.py", "--shape", "llama-2-7b", "--prefill-batches", "", "--hf-batches", "", "--fit-context", "0",
                "--static-prefill-batches", "1", "--decode-batches", "", "--repeats", "3", "--out", "/tmp/p2"]
    runpy.run_path("packages/fq-eval/benchmarks/e2e.py", run_name="__main__")
PY
date -u +%T >> $OUT/log.txt
timeout 60 python3 -m pytest -q -m gpu packages/fq-kernels/tests/test_kernels_gpu.py -k "rope_map or quant_kv_into" \
    > $OUT/tests.txt 2>&1; date -u +%T >> $OUT/log.txt
timeout 80 bash -c "python3 $E2E --static-prefill-batches '' --decode-batches 1,16 --out /tmp/d1" \
    > $OUT/decode.txt 2>&1; date -u +%T >> $OUT/log.txt
tar czf $OUT/json.tgz /tmp/p1 /tmp/p2 /tmp/d1 2>/dev/null
