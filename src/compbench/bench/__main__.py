"""``python -m compbench.bench``."""

from compbench.bench.cli import main

raise SystemExit(main())
