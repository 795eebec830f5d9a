"""Session 14: transform_quant at M = 2048 with software pipelining (num_stages) and without the tie check."""
import inspect, textwrap, torch, triton, triton.testing
import triton.language as tl
from fq_kernels.triton import transform_quant as tqm
from fq_kernels._runtime import sm_count

src = textwrap.dedent(inspect.getsource(tqm._transform_quant_kernel.fn))
NEAR = "        near = tl.abs(tl.abs(v - r) - 0.5) < 3.814697265625e-06\n"
assert NEAR in src
cut_start = src.index(NEAR)
cut_end = src.index("        if ASYM:\n            q = tl.minimum")
nocheck = src[:cut_start] + src[cut_end:]
nocheck = nocheck.replace("def _transform_quant_kernel(", "def _tq_nocheck(")
import importlib, sys, os
os.makedirs("/tmp/tqv", exist_ok=True)
header = "import triton\nimport triton.language as tl\nfrom fq_kernels.triton.transform_quant import _dot\nfrom fq_kernels.triton.common import rint\n\n"
open("/tmp/tqv/tq_nocheck.py", "w").write(header + nocheck)
sys.path.insert(0, "/tmp/tqv")
kernels = {"current": tqm._transform_quant_kernel, "no-tie-check": importlib.import_module("tq_nocheck")._tq_nocheck}

torch.manual_seed(0)
m = 2048
def bench(name, fn):
    fn(); torch.cuda.synchronize()
    g = torch.cuda.CUDAGraph()
    with torch.cuda.graph(g):
        fn()
    ms = triton.testing.do_bench(g.replay, warmup=10, rep=60, return_mode="median")
    print(f"{name:80s} {ms*1e3:8.1f} us", flush=True)

clip = torch.tensor([0.95, 0.9], device="cuda")
for n1, n2, confs in [(86, 128, [(8, 4), (16, 4)]), (64, 64, [(4, 8), (8, 8)]), (112, 128, [(8, 4), (16, 4)])]:
    k = n1 * n2
    x = torch.randn(m, k, device="cuda", dtype=torch.bfloat16)
    left = torch.linalg.qr(torch.randn(n1, n1, device="cuda"))[0]
    right = torch.linalg.qr(torch.randn(n2, n2, device="cuda"))[0]
    q = torch.empty(m, k, dtype=torch.int8, device="cuda")
    s = torch.empty(m, dtype=torch.float32, device="cuda")
    z = torch.empty(m, dtype=torch.float32, device="cuda")
    b1, b2 = triton.next_power_of_2(n1), triton.next_power_of_2(n2)
    print(f"--- tile {n1}x{n2} K={k}")
    for kname, kern in kernels.items():
        for warps, pps in confs:
            for stages in (1, 2, 3):
                def run(kern=kern, warps=warps, pps=pps, stages=stages):
                    grid = (min(m, sm_count(x) * pps),)
                    kern[grid](
                        x, left, right, clip, q, s, z, m, x.stride(0), q.stride(0),
                        N1=n1, N2=n2, B1=b1, B2=b2, HAS_LEFT=True, HAS_RIGHT=True, OUT=1, DOT=2,
                        QMIN=0, QMAX=15, VMIN=-16.0, ASYM=True, NATIVE=True, REDUCE_AXES=False, PDL=False,
                        num_warps=warps, num_stages=stages)
                try:
                    bench(f"{kname} warps={warps} pps={pps} stages={stages}", run)
                except Exception as e:
                    print("fail", kname, warps, pps, stages, type(e).__name__, str(e)[:100])
