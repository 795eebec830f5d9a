"""SwiGLU epilogue at a large shape: kernel vs reference, and vs the unfused kernel + swiglu_halves."""

import torch

from fq_kernels import reference as ref
from fq_kernels.triton.gemm_prefill import candidates, launch_prefill

DEV = "cuda"
for m, k, n in [(2048, 4096, 22016), (333, 4096, 3000), (2048, 576, 3000)]:
    g = torch.Generator().manual_seed(m + n)
    xv = torch.randint(-8, 8, (m, k), generator=g, dtype=torch.int8)
    wv = torch.randint(-8, 8, (n, k), generator=g, dtype=torch.int8)
    sx = (torch.rand(m, generator=g) + 0.1).to(DEV)
    sw = (torch.rand(n, generator=g) * 0.003).to(DEV)
    bias = torch.randn(n, generator=g).to(DEV)
    zx, wsum = torch.randint(-8, 8, (m,), generator=g).float().to(DEV), wv.sum(1).float().to(DEV)
    plain = ref.w4a4_linear_ref(xv.to(DEV), sx, wv.to(DEV), sw, bias, torch.bfloat16, zx, wsum)
    expected = ref.swiglu_halves(plain)
    a, b = xv.to(DEV), wv.to(DEV)
    for cfg in candidates(m, n, k, fp8=False)[:2]:
        out = torch.full((m, n // 2), float("nan"), dtype=torch.bfloat16, device=DEV)
        launch_prefill(a, b, sx, sw, bias, out, cfg, zx=zx, wsum=wsum, swiglu=True)
        full = torch.empty(m, n, dtype=torch.bfloat16, device=DEV)
        launch_prefill(a, b, sx, sw, bias, full, cfg, zx=zx, wsum=wsum)
        unfused = ref.swiglu_halves(full)
        for name, other in (("ref", expected), ("unfused kernel", unfused)):
            d = (out.float() - other.float()).abs()
            rel = d / other.float().abs().clamp_min(1e-30)
            i = int(torch.argmax(torch.where(d > 1e-5, rel, torch.zeros_like(rel))))
            r, c = divmod(i, n // 2)
            print(
                f"M={m} K={k} N={n} {cfg.schedule} {cfg.block_n} vs {name}: nan {out.isnan().sum().item()} "
                f"differ {(out != other).float().mean().item():.5%} max abs {d.max().item():.3g} "
                f"worst rel {rel.view(-1)[i].item():.3g} at ({r},{c}): out {out[r, c].item():.6g} "
                f"other {other[r, c].item():.6g} gate {plain[r, c].item():.6g}/{full[r, c].item():.6g} "
                f"up {plain[r, c + n // 2].item():.6g}/{full[r, c + n // 2].item():.6g}"
            )
    print(f"plain kernel vs ref differ {(full != plain).float().mean().item():.5%}")
