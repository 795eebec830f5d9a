"""e2e.py with fp8 prefill GEMMs and torch._scaled_mm tried first."""

import runpy
import sys

import fq_kernels.quant_linear as ql
import fq_kernels.triton.gemm_prefill as gp

ql.PREFILL_DEFAULT = "fp8"
_orig = gp.candidates
gp.candidates = lambda m, n, k, fp8: sorted(_orig(m, n, k, fp8), key=lambda c: c.schedule != "scaled_mm")
sys.argv = ["e2e.py", *sys.argv[1:]]
runpy.run_path("packages/fq-eval/benchmarks/e2e.py", run_name="__main__")
