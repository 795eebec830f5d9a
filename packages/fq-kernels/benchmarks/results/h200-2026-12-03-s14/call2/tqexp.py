"""Session 14: where transform_quant's time goes at M = 2048, K = 11008 (86 x 128 tiles)."""
import torch, triton, triton.testing
from fq_kernels.triton import transform_quant as tqm
from fq_kernels._runtime import sm_count

torch.manual_seed(0)
m = 2048
def bench(name, fn):
    fn(); torch.cuda.synchronize()
    ms = triton.testing.do_bench(fn, warmup=10, rep=50, return_mode="median")
    print(f"{name:70s} {ms*1e3:8.1f} us", flush=True)

clip = torch.tensor([0.95, 0.9], device="cuda")
for n1, n2 in [(86, 128), (112, 128), (64, 64), (64, 128), (128, 128)]:
    k = n1 * n2
    x = torch.randn(m, k, device="cuda", dtype=torch.bfloat16)
    left = torch.linalg.qr(torch.randn(n1, n1, device="cuda"))[0]
    right = torch.linalg.qr(torch.randn(n2, n2, device="cuda"))[0]
    lb, rb = left.bfloat16(), right.bfloat16()
    print(f"--- tile {n1}x{n2} K={k}")
    bench("fused default", lambda: tqm.launch_transform_quant(x, left, right, clip, 4, "int8", "bf16"))
    tiles = x.view(m, n1, n2)
    bench("cuBLAS tiles @ right (bf16)", lambda: tiles @ rb)
    y1 = tiles @ rb
    bench("cuBLAS left^T @ tiles (batched, bf16)", lambda: torch.matmul(lb.T, y1))
    bench("cuBLAS (tiles^T @ left) via view [M*n2? no] transpose", lambda: y1.transpose(1, 2) @ lb)
    q = torch.empty(m, k, dtype=torch.int8, device="cuda")
    s = torch.empty(m, dtype=torch.float32, device="cuda")
    z = torch.empty(m, dtype=torch.float32, device="cuda")
    b1, b2 = triton.next_power_of_2(n1), triton.next_power_of_2(n2)
    for warps, pps in [(4, 8), (8, 4), (16, 4), (8, 8), (16, 2)]:
        for hl, hr in [(False, False), (True, False), (False, True), (True, True)]:
            for asym in (True,):
                def run(warps=warps, pps=pps, hl=hl, hr=hr, asym=asym):
                    grid = (min(m, sm_count(x) * pps),)
                    tqm._transform_quant_kernel[grid](
                        x, left, right, clip, q, s, z, m, x.stride(0), q.stride(0),
                        N1=n1, N2=n2, B1=b1, B2=b2, HAS_LEFT=hl, HAS_RIGHT=hr, OUT=1, DOT=2,
                        QMIN=0, QMAX=15, VMIN=-16.0, ASYM=asym, NATIVE=True, REDUCE_AXES=False, PDL=False,
                        num_warps=warps, num_stages=1)
                try:
                    bench(f"kernel warps={warps} pps={pps} left={hl} right={hr} asym={asym}", run)
                except Exception as e:
                    print("fail", warps, pps, hl, hr, type(e).__name__, str(e)[:100])
