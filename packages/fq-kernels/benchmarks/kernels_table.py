"""Write the W4A4-vs-bf16 table, its JSON and the speedup plot (see fq_kernels.bench.table).

FQ_KERNELS_AUTOTUNE=1 python packages/fq-kernels/benchmarks/kernels_table.py --out docs/benchmarks
"""

from __future__ import annotations

import sys

from fq_kernels.bench.table import main

if __name__ == "__main__":
    sys.exit(main())
