"""Run a script (argv[1:]) with sweep15.py's best configurations: transform_quant's at 2048 tokens by
exact key, the decode GEMM's by shape class (N > K wide, else narrow; <= 8 or 16 tokens)."""
import json, os, runpy, sys
from fq_kernels import tuning
from fq_kernels.cuda import decode_gemm
from fq_kernels.cuda.decode_gemm import TiledConfig
from fq_kernels.triton.transform_quant import TQConfig

best = json.load(open(os.environ["BEST"]))
FORCE = {eval(k): TQConfig(**v["cfg"]) for k, v in best["tq"].items()}
_orig = tuning.choose
tuning.choose = lambda key, cands, run: FORCE.get(key) or _orig(key, cands, run)
cls = {}
for group in (8, 16):
    for wide in (True, False):
        rows = [v for k, v in best["tiled"].items() if (eval(k)[2] > eval(k)[3]) == wide and (eval(k)[1] <= 8) == (group == 8)]
        if rows:  # the configuration with the least total time over the class's swept shapes
            total = {}
            for r in rows:
                for us, c in r["all"]:
                    total.setdefault(tuple(c.values()), []).append(us)
            pick = min((v for v in total.items() if len(v[1]) == len(rows)), key=lambda kv: sum(kv[1]))[0]
            cls[(group, wide)] = TiledConfig(*pick)
print("decode classes:", cls, flush=True)
_cands = decode_gemm.candidates
def candidates(m, n, k):
    c = cls.get((8 if m <= 8 else 16, n > k))
    rest = _cands(m, n, k)
    return rest if c is None else [c, *(x for x in rest if x != c)]
decode_gemm.candidates = candidates
sys.argv = sys.argv[1:]
runpy.run_path(sys.argv[0], run_name="__main__")
