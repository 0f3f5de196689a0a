"""Sweep-level bookkeeping for Hydra multiruns (any launcher: basic, joblib, submitit).

Jobs may run in other processes or on other machines, so each job leaves a one-word marker
file in its own Hydra job folder (``ok``, ``failed`` or ``skipped``), and the launcher process
counts them when the multirun ends. Hydra callbacks are configured under ``hydra.callbacks``
in ``conf/config.yaml``.
"""

from __future__ import annotations

import logging
from collections import Counter
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

log = logging.getLogger("compbench")

#: Name of the marker file a job writes into its Hydra output folder.
OUTCOME_FILE = ".compbench_outcome"
OUTCOMES = ("ok", "failed", "skipped")


def write_outcome(job_dir: Path, outcome: str) -> None:
    """Record how a job ended (``ok``/``failed``/``skipped``) in its Hydra job folder."""
    Path(job_dir).mkdir(parents=True, exist_ok=True)
    (Path(job_dir) / OUTCOME_FILE).write_text(outcome)


def count_outcomes(sweep_dir: Path) -> Counter:
    """How many jobs under ``sweep_dir`` ended ok, failed or skipped (from their markers)."""
    counts: Counter = Counter()
    for marker in Path(sweep_dir).rglob(OUTCOME_FILE):
        counts[marker.read_text().strip()] += 1
    return counts


def summary_line(counts: Counter) -> str:
    """``skipped N done, ran M: K ok, F failed``: the line a resumed sweep is judged by."""
    ran = counts["ok"] + counts["failed"]
    return f"skipped {counts['skipped']} done, ran {ran}: {counts['ok']} ok, {counts['failed']} failed"


class SweepSummaryCallback(Callback):
    """At the end of a multirun, logs how many jobs were skipped as done, succeeded and failed."""

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_dir = Path(str(config.hydra.sweep.dir))
        line = summary_line(count_outcomes(sweep_dir))
        log.info("Sweep %s: %s", sweep_dir, line)
