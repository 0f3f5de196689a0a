"""Thin wrapper kept for old commands: the benchmark now lives in ``python -m compbench.bench``.

Runs ``python -m compbench.bench --only contrastive_overhead`` (extra arguments are passed on).
"""

import sys

from compbench.bench import main

if __name__ == "__main__":
    raise SystemExit(main(["--only", "contrastive_overhead", *sys.argv[1:]]))
