"""Reading runs for reports and notebooks: the store as a frame with resolvable run directories.

``load_runs`` is the Python entry point a notebook uses (no re-parsing of exported files)::

    from compbench.reporting.runs import load_runs, reliability
    runs = load_runs("results/compbench.db")            # ok runs, debug runs left out
    curve = reliability(runs.iloc[0]["run_dir"])        # accuracy vs confidence per bin

``run_dir`` is written absolute by the pipeline. Older stores hold it relative to the directory
the run was started from; ``resolve_run_dir`` finds it relative to the store instead, so the same
frame works from the repository root, from ``notebooks/`` or from anywhere else.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from compbench.records.store import DEFAULT_DB, ResultsStore
from compbench.reporting.selection import ReportError, drop_debug


def resolve_run_dir(run_dir: str | Path | None, db: str | Path) -> Path | None:
    """An absolute path for a stored ``run_dir``.

    Absolute paths are kept. A relative one (older stores: relative to where ``compbench`` ran)
    is tried against the store's folder and each folder above it, then as ``<store>/runs/<name>``
    (the default layout, ``paths.runs_dir``); the first that exists wins, else the first candidate.
    """
    if run_dir is None or (not isinstance(run_dir, Path) and (pd.isna(run_dir) or str(run_dir) == "")):
        return None
    path = Path(run_dir)
    if path.is_absolute():
        return path
    store_dir = Path(db).resolve().parent
    candidates = [folder / path for folder in (store_dir, *store_dir.parents)]
    candidates.append(store_dir / "runs" / path.name)
    return next((c for c in candidates if c.exists()), candidates[0])


def load_runs(
    db: str | Path = DEFAULT_DB, *, status: str | None = "ok", include_debug: bool = False
) -> pd.DataFrame:
    """The runs of a results store as a DataFrame, ``run_dir`` as absolute ``Path`` objects.

    Args:
        db: the SQLite store (``paths.db``; default ``results/compbench.db``).
        status: keep runs with this status (``ok``/``failed``); None keeps all.
        include_debug: keep runs made with a debug config (``debug=fast``).

    Raises:
        ReportError: the store does not exist.
    """
    db = Path(db)
    if not db.is_file():
        raise ReportError(f"no results database at {db}; run an experiment first or pass its path.")
    frame = ResultsStore(db).frame()
    if status is not None and "status" in frame.columns:
        frame = frame[frame["status"] == status]
    if not include_debug:
        frame, _ = drop_debug(frame)
    frame = frame.reset_index(drop=True)
    if "run_dir" in frame.columns:
        frame["run_dir"] = [resolve_run_dir(v, db) for v in frame["run_dir"]]
    return frame


def reliability(run_dir: str | Path, n_bins: int = 15) -> pd.DataFrame:
    """Reliability data of one run from its ``calibration.npz``: per equal-width confidence bin,
    the number of tokens, their mean confidence and their accuracy (the bins of ``calib.ece``)."""
    from compbench.metrics.calibration import CALIBRATION_FILE, equal_width_bins

    path = Path(run_dir) / CALIBRATION_FILE
    if not path.is_file():
        raise ReportError(f"no {CALIBRATION_FILE} in {run_dir}; the run was made with calibration disabled or failed.")
    with np.load(path, allow_pickle=False) as data:
        confidence, correct = data["confidence"], data["correct"].astype(float)
    bins = equal_width_bins(confidence, n_bins)
    counts = np.bincount(bins, minlength=n_bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_conf = np.bincount(bins, weights=confidence, minlength=n_bins) / counts
        accuracy = np.bincount(bins, weights=correct, minlength=n_bins) / counts
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    return pd.DataFrame({"lower": edges[:-1], "upper": edges[1:], "tokens": counts,
                         "confidence": mean_conf, "accuracy": accuracy})
