"""Entry for `python -m fq`: the same app as the `fq` console script."""

import sys

from fq_core.cli import main

sys.exit(main())
