"""What the study plot scripts beside this file share: their sweep's ok rows, and how a figure is saved."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from compbench.records.store import ResultsStore


def sweep_rows(db: Path, sweep_id: str) -> pd.DataFrame:
    """The ``status=ok`` rows of one sweep in a results store."""
    frame = ResultsStore(db).frame()
    return frame[(frame["status"] == "ok") & (frame["sweep_id"] == sweep_id)].copy()


def save_figure(fig, frame: pd.DataFrame, sweep_id: str, out: Path) -> None:
    """Title the figure with the sweep and its seed count, write it to ``out`` and say so."""
    fig.suptitle(f"{sweep_id}: mean ± std over {frame['seed'].nunique()} seeds")
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    print(f"wrote {out}")
