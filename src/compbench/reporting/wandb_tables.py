"""A sweep's comparison on W&B: its table as a ``wandb.Table`` and its plots as images.

``compbench-report wandb --sweep-id ID`` opens one W&B run (``job_type=report``, grouped with
the sweep's runs, which ``logger=wandb`` groups by ``sweep_id``) and logs:

* ``runs``: one line per run (config, method parameters, every metric): sortable and plottable
  on the project page;
* ``summary``: the report table's groups (seeds averaged: ``<metric>_mean``, ``_std``, ``_n``);
* ``plots/<kind>_<task>``: the PNGs of ``compbench-report plot all``.

Offline by default (``--mode offline``; ``wandb sync DIR`` uploads later): wandb online without
credentials can hang, and CI has no network.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from compbench.reporting.plots import plot
from compbench.reporting.render import render_csv_tables
from compbench.reporting.selection import ReportError
from compbench.reporting.tables import build_report


def _table_frame(frame: pd.DataFrame) -> pd.DataFrame:
    """Columns W&B tables accept: paths as text, bool/str/number as they are."""
    frame = frame.copy()
    for column in frame.columns:
        if frame[column].map(lambda v: isinstance(v, Path)).any():
            frame[column] = frame[column].astype(str)
    return frame


def log_sweep(runs: pd.DataFrame, sweep_id: str, *, project: str = "compbench", entity: str | None = None,
              mode: str = "offline", out_dir: str | Path = "results/wandb",
              all_methods: Sequence[str] = ()) -> Path:
    """Log ``runs`` (the sweep's ok runs) to one W&B run; return its local run directory."""
    import wandb

    if mode == "online":
        from compbench.tracking import wandb_credentials_present

        if not wandb_credentials_present():
            raise ReportError("--mode online needs W&B credentials (WANDB_API_KEY or `wandb login`); "
                              "use --mode offline and `wandb sync` later.")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    report = build_report(runs)
    summary = pd.read_csv(pd.io.common.StringIO(render_csv_tables(report.tables)))
    images = plot(runs, "all", out_dir / "plots" / sweep_id, "png", all_methods=all_methods)
    run = wandb.init(project=project, entity=entity, mode=mode, dir=str(out_dir), name=f"report-{sweep_id}",
                     group=sweep_id, job_type="report", tags=["compbench-report"], reinit="create_new",
                     settings=wandb.Settings(silent=True, console="off", init_timeout=90))
    try:
        run.log({
            "runs": wandb.Table(dataframe=_table_frame(runs.reset_index(drop=True))),
            "summary": wandb.Table(dataframe=_table_frame(summary)),
            **{f"plots/{path.stem}": wandb.Image(str(path), caption=path.stem) for path in images},
        })
        run.summary.update({"sweep_id": sweep_id, "n_runs": len(runs), "notes": " | ".join(report.notes)})
        run_dir = Path(run.dir).parent
    finally:
        run.finish()
    return run_dir
