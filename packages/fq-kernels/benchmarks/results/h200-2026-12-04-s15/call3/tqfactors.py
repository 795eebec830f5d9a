"""Session 15, call 3: transform_quant with float32 against 16-bit factors (the dot's type, passed as
they are), programs per SM, at 2048 / 16 / 1 tokens; CUDA-graph timed, kernel launched directly."""
import torch
from fq_kernels.bench.problems import LinearProblem
from fq_kernels.bench.timing import time_graph
from fq_kernels.triton.transform_quant import TQConfig, launch_transform_quant

CFGS = {4096: [TQConfig(4, 1, p) for p in (2, 3, 4)], 11008: [TQConfig(8, 1, p, maxnreg=128) for p in (1, 2)]}
for m in (2048, 16, 1):
    for k, cfgs in CFGS.items():
        p = LinearProblem(m, k, 16)
        for fmt, sym in (("fp8", True), ("int8", False)):
            for cfg in cfgs if m == 2048 else cfgs[-1:]:
                row = []
                for fdt in (torch.float32, torch.bfloat16):
                    left, right = p.left.to(fdt).contiguous(), p.right.to(fdt).contiguous()
                    call = lambda: launch_transform_quant(p.x, left, right, p.clip, 4, fmt, config=cfg, symmetric=sym)
                    row.append(time_graph(lambda i: call)["median_ms"] * 1e3)
                print(f"M={m} K={k} {fmt} sym={sym} {cfg}: float32 factors {row[0]:.1f} us, bf16 factors {row[1]:.1f} us", flush=True)
