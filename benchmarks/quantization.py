"""Thin wrapper kept for old commands: the benchmark now lives in ``python -m compbench.bench``.

Runs ``python -m compbench.bench --only quantizationquantization`` (extra arguments are passed on).
"""

import sys

from compbench.bench import main

if __name__ == "__main__":
    raise SystemExit(main(["--only", "speedup,size", *sys.argv[1:]]))
