"""Shared overrides for sweep tests: tiny model, a few steps, cheap evaluation."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

#: A tiny run in a few seconds: debug=fast, no perturbations, 2 latency repeats, no progress bar.
FAST = (
    "debug=fast",
    "evaluation.robustness.enabled=false",
    "evaluation.efficiency.repeats=2",
    "trainer.enable_progress_bar=false",
)
