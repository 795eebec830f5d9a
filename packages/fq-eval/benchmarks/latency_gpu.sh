#!/usr/bin/env bash
# LLaMA-2-7B- and LLaMA-3-8B-shaped FP16 prefill and decode latency (random weights: no checkpoint),
# through `fq eval`, on a CUDA machine with torch + transformers. Results JSON + logs go to $OUT
# (default ./latency-out). docs/benchmarks/latency.md records a run of this script.
set -euo pipefail
OUT=${OUT:-latency-out}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
python3 -m pip install -q --no-deps --no-build-isolation -e packages/fq-core -e packages/fq-eval
FQ="$(python3 -c 'import os, sys; print(os.path.join(os.path.dirname(sys.executable), "fq"))')"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv | tee "$OUT/gpu.txt"
python3 -c 'import torch, transformers; print("torch", torch.__version__, "cuda", torch.version.cuda,
      "transformers", transformers.__version__)' | tee -a "$OUT/gpu.txt"
run() { local name=$1; shift; "$FQ" eval --method fp --latency prefill,decode --output "$OUT/$name.json" "$@" \
    2>&1 | tee "$OUT/$name.log"; }
run llama2-7b-model --model shape:llama-2-7b --repeats 5
run llama2-7b-layer --model shape:llama-2-7b --layers 1 --latency-scope layer --repeats 5
run llama3-8b-model --model shape:llama-3-8b --repeats 5
