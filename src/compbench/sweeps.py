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


def write_outcome(job_dir: Path, outcome: str, run_id: str = "") -> None:
    """Record how a job ended (``ok``/``failed``/``skipped``) and its row's run id (for a
    skipped job, the stored run it stands for) in its Hydra job folder."""
    Path(job_dir).mkdir(parents=True, exist_ok=True)
    (Path(job_dir) / OUTCOME_FILE).write_text(f"{outcome}\n{run_id}".strip())


def _read_marker(marker: Path) -> tuple[str, str]:
    outcome, _, run_id = marker.read_text().strip().partition("\n")
    return outcome.strip(), run_id.strip()


def count_outcomes(sweep_dir: Path) -> Counter:
    """How many jobs under ``sweep_dir`` ended ok, failed or skipped (from their markers)."""
    counts: Counter = Counter()
    for marker in Path(sweep_dir).rglob(OUTCOME_FILE):
        counts[_read_marker(marker)[0]] += 1
    return counts


def sweep_run_ids(sweep_dir: Path) -> list[str]:
    """The run ids of a sweep's jobs (ran or skipped as done), in job order."""
    markers = sorted(Path(sweep_dir).rglob(OUTCOME_FILE),
                     key=lambda m: [int(p) if p.isdigit() else p for p in m.parent.relative_to(sweep_dir).parts])
    return [run_id for m in markers if (run_id := _read_marker(m)[1])]


def summary_line(counts: Counter) -> str:
    """``skipped N done, ran M: K ok, F failed``: the line a resumed sweep is judged by."""
    ran = counts["ok"] + counts["failed"]
    return f"skipped {counts['skipped']} done, ran {ran}: {counts['ok']} ok, {counts['failed']} failed"


class SweepSummaryCallback(Callback):
    """At the end of a multirun, logs how many jobs were skipped as done, succeeded and failed,
    and prints the sweep's rows side by side."""

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_dir = Path(str(config.hydra.sweep.dir))
        line = summary_line(count_outcomes(sweep_dir))
        log.info("Sweep %s: %s", sweep_dir, line)
        db = Path(str(config.paths.db))
        run_ids = sweep_run_ids(sweep_dir)
        if not run_ids or not db.exists():
            return
        from compbench.records.store import ResultsStore
        from compbench.reporting.summary import sweep_table

        by_id = {r["run_id"]: r for r in ResultsStore(db).rows()}
        rows = [by_id[i] for i in run_ids if i in by_id]
        print(f"\n{sweep_table(rows)}\n\nrows stored in {db}; compbench-report table for more", flush=True)
