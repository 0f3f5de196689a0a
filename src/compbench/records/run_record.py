"""The one run record: every command that writes a row (a run, a pretraining) goes through
:func:`run_record`, whose ``finally`` writes ``record.json`` and appends the row to the store,
so a failed run is a row too and the identity columns and the bad-row fallback cannot drift.
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from compbench.records.provenance import provenance
from compbench.records.schema import RowError, error_summary, utc_timestamp
from compbench.records.store import ResultsStore

log = logging.getLogger(__name__)

#: Columns a failed-contract row keeps besides provenance (what identifies the run).
_KEEP_ON_BAD_ROW = ("run_id", "config_hash", "sweep_id", "started_at", "duration_s", "run_dir", "model", "task",
                    "lang", "method", "seed")


def identity_columns(*, run_id: str, config_hash: str, sweep_id: str, run_dir: Path, model: str, task: str,
                     lang: str, method: str, seed: int | None, **extra: Any) -> dict[str, Any]:
    """The columns every row starts with: who ran what, when, where, with which code; ``status``
    is ``failed`` until the run sets it to ``ok``. ``extra`` columns follow (``debug``, ...)."""
    return {
        "run_id": run_id, "config_hash": config_hash, "sweep_id": sweep_id, "status": "failed", "error": "",
        "started_at": utc_timestamp(), "run_dir": str(run_dir), **provenance(),
        "model": model, "task": task, "lang": lang, "method": method, "seed": seed, **extra,
    }


def store_row(db: Path, row: dict[str, Any]) -> None:
    """Append the row; a row that breaks the contract is stored as a failed row saying why."""
    store = ResultsStore(db)
    try:
        store.append(row)
    except RowError as exc:
        log.error("Row of run %s breaks the row contract (%s); storing it as failed", row["run_id"], exc)
        store.append({**{k: row.get(k) for k in _KEEP_ON_BAD_ROW}, **provenance(), "status": "failed",
                      "error": error_summary(exc)})


@contextmanager
def run_record(db: Path, run_dir: Path, row: dict[str, Any], config: dict[str, Any] | None = None,
               started: float | None = None) -> Iterator[dict[str, Any]]:
    """Yield ``row`` to fill; whatever happens, then record it: ``duration_s`` (from ``started``,
    default now), ``<run_dir>/record.json`` (the row, and the resolved ``config`` when given) and
    one row in the store at ``db``. An exception is recorded in ``error`` (unless the body set it)
    and re-raised."""
    started = time.time() if started is None else started
    try:
        yield row
    except BaseException as exc:
        if not row.get("error"):
            row["error"] = error_summary(exc)
        raise
    finally:
        row["duration_s"] = time.time() - started
        record: dict[str, Any] = {"row": row} if config is None else {"row": row, "config": config}
        (Path(run_dir) / "record.json").write_text(json.dumps(record, indent=2, default=str))
        store_row(Path(db), row)


def new_run_id() -> str:
    """Sortable, unique: UTC timestamp plus 8 random hex digits."""
    return time.strftime("%Y%m%d-%H%M%S", time.gmtime()) + "-" + uuid.uuid4().hex[:8]
