"""Session 15, call 2: transform_quant configurations at M = 2048 (fp8 symmetric, the layer's; int8
asymmetric, the 7B prompt's) and the decode GEMM's TiledConfig in the overlapped layer (tq + GEMM,
CUDA-graph replays, as kernels_table's `ours`) at 1 / 16 tokens. Writes best.json for patch15.py."""
import json, sys, time
import torch
from fq_kernels import tuning
from fq_kernels.bench import contenders
from fq_kernels.bench.problems import LinearProblem
from fq_kernels.bench.timing import time_graph
from fq_kernels.cuda.decode_gemm import TiledConfig
from fq_kernels.ops import transform_quant, transform_quant_asym
from fq_kernels.triton.transform_quant import TQConfig

out = sys.argv[1]
FORCE = {}
_orig = tuning.choose
tuning.choose = lambda key, cands, run: FORCE.get(key) or _orig(key, cands, run)
best = {"tq": {}, "tiled": {}}
T = lambda make, variants=1: time_graph(make, variants)["median_ms"] * 1e3

TQ = {
    (64, 64): [TQConfig(4, 1, p) for p in (4, 5, 6, 8, 12)] + [TQConfig(4, 2, p) for p in (4, 6, 8)]
    + [TQConfig(4, 1, 6, True), TQConfig(4, 1, 8, maxnreg=72)],
    (86, 128): [TQConfig(8, 1, p, maxnreg=128) for p in (2, 3, 4)] + [TQConfig(8, 2, 2, maxnreg=128), TQConfig(8, 3, 4)],
}
for k, (n1, n2) in ((4096, (64, 64)), (11008, (86, 128))):
    p = LinearProblem(2048, k, 16)
    for fmt, sym in (("fp8", True), ("int8", False)):
        key = ("transform_quant", 2048, n1, n2, True, True, fmt, "bf16", sym)
        op = transform_quant if sym else transform_quant_asym
        res = []
        for cfg in TQ[(n1, n2)]:
            FORCE[key] = cfg
            try:
                us = T(lambda i: lambda: op(p.x, p.left, p.right, p.clip, 4, fmt))
            except Exception as e:  # noqa: BLE001
                print("fail", key, cfg, type(e).__name__, str(e)[:100], flush=True)
                continue
            res.append((us, cfg))
            print(f"tq M=2048 {n1}x{n2} {fmt} sym={sym} {cfg}: {us:.1f} us", flush=True)
        del FORCE[key]
        us, cfg = min(res, key=lambda r: r[0])
        best["tq"][repr(key)] = {"us": us, "cfg": cfg.__dict__, "default_us": res[0][0]}
json.dump(best, open(f"{out}/best.json", "w"), indent=1)

DEC = [TiledConfig(4, 1, 8), TiledConfig(8, 1, 6), TiledConfig(4, 2, 6), TiledConfig(8, 2, 4),
       TiledConfig(4, 1, 12), TiledConfig(4, 1, 16), TiledConfig(4, 2, 8), TiledConfig(4, 2, 12),
       TiledConfig(2, 1, 16), TiledConfig(2, 2, 12), TiledConfig(2, 2, 16), TiledConfig(8, 1, 10),
       TiledConfig(8, 2, 8), TiledConfig(4, 4, 6), TiledConfig(2, 4, 8)]
for k, n, m in ((4096, 11008, 1), (4096, 11008, 16), (4096, 14336, 1), (4096, 14336, 16), (11008, 4096, 1), (11008, 4096, 16)):
    p = LinearProblem(m, k, n)
    mk, cnt = contenders.bf16(p)
    bf = T(mk, cnt)
    mk, cnt = contenders.ours(p)
    key = ("tiled", m, n, k, False)
    res = []
    for cfg in DEC:
        FORCE[key] = cfg
        try:
            us = T(mk, cnt)
        except Exception as e:  # noqa: BLE001
            print("fail", key, cfg, type(e).__name__, str(e)[:100], flush=True)
            continue
        res.append((us, cfg))
        print(f"layer {k}x{n} M={m} {cfg}: {us:.1f} us ({bf / us:.2f}x of bf16 {bf:.1f})", flush=True)
    del FORCE[key]
    us, cfg = min(res, key=lambda r: r[0])
    best["tiled"][repr(key)] = {"us": us, "cfg": cfg.__dict__, "bf16_us": bf, "all": [(u, c.__dict__) for u, c in res]}
    del mk
    json.dump(best, open(f"{out}/best.json", "w"), indent=1)
print("done", time.strftime("%T"), flush=True)
