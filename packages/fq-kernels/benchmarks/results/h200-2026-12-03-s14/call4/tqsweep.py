"""Session 14: transform_quant (IEEE quotient by reciprocal + FMA) configurations at M = 2048 and 16, CUDA-graph timed."""
import torch, triton, triton.testing
from fq_kernels.triton import transform_quant as tqm
from fq_kernels._runtime import sm_count

torch.manual_seed(0)
def bench(fn):
    fn(); torch.cuda.synchronize()
    g = torch.cuda.CUDAGraph()
    with torch.cuda.graph(g):
        fn()
    return triton.testing.do_bench(g.replay, warmup=10, rep=60, return_mode="median") * 1e3

clip = torch.tensor([0.95, 0.9], device="cuda")
SWEEP = {
    (86, 128): [(w, st, pps, mr) for w in (8, 16) for st in (1, 2, 3) for pps in (4,) for mr in (None, 128)],
    (112, 128): [(w, st, 4, mr) for w in (8, 16) for st in (1, 3) for mr in (None, 128)],
    (64, 64): [(w, st, pps, None) for w in (4, 8) for st in (1, 3) for pps in (8, 16)],
}
for m in (2048, 16):
    for (n1, n2), confs in SWEEP.items():
        k = n1 * n2
        x = torch.randn(m, k, device="cuda", dtype=torch.bfloat16)
        left = torch.linalg.qr(torch.randn(n1, n1, device="cuda"))[0]
        right = torch.linalg.qr(torch.randn(n2, n2, device="cuda"))[0]
        q = torch.empty(m, k, dtype=torch.int8, device="cuda")
        s = torch.empty(m, dtype=torch.float32, device="cuda")
        z = torch.empty(m, dtype=torch.float32, device="cuda")
        b1, b2 = triton.next_power_of_2(n1), triton.next_power_of_2(n2)
        print(f"--- M={m} tile {n1}x{n2} K={k}", flush=True)
        print(f"  launch_transform_quant default ({tqm.candidates(b1, b2)[0]}): "
              f"{bench(lambda: tqm.launch_transform_quant(x, left, right, clip, 4, 'int8', 'bf16', symmetric=False)):.1f} us", flush=True)
        for warps, stages, pps, maxnreg in confs:
            extra = {} if maxnreg is None else {"maxnreg": maxnreg}
            def run():
                grid = (min(m, sm_count(x) * pps),)
                tqm._transform_quant_kernel[grid](
                    x, left, right, clip, q, s, z, m, x.stride(0), q.stride(0),
                    N1=n1, N2=n2, B1=b1, B2=b2, HAS_LEFT=True, HAS_RIGHT=True, OUT=1, DOT=2,
                    QMIN=0, QMAX=15, VMIN=-16.0, ASYM=True, NATIVE=True, REDUCE_AXES=False, PDL=False,
                    num_warps=warps, num_stages=stages, **extra)
            try:
                print(f"  warps={warps} stages={stages} pps={pps} maxnreg={maxnreg}: {bench(run):.1f} us", flush=True)
            except Exception as e:
                print("  fail", warps, stages, pps, maxnreg, type(e).__name__, str(e)[:120], flush=True)
