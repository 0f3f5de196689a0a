"""Append rows ``start..stop-1`` of one writer to a results store, skipping those already stored.

Usage: ``python store_writer.py DB WRITER START STOP``. Used by the store fault tests: two of
these write at once (concurrency), or one is SIGKILLed at random moments and restarted
(re-running completes exactly the missing rows). ``STORE_WRITER_PAUSE_S`` pauses after each row.
"""

from __future__ import annotations

import os
import sys
import time

from compbench.records.store import ResultsStore


def row(writer: str, i: int) -> dict:
    """Row ``i`` of ``writer``: its values follow from (writer, i), so a partial row is detectable."""
    return {"run_id": f"{writer}-{i:05d}", "config_hash": f"{writer}{i:05d}", "status": "ok", "error": "",
            "model": "m", "task": "t", "method": "none", "seed": i, "quality.f1": i / 1000.0,
            "eff.size_mb": float(i), "calib.ece": 1.0 / (i + 1)}


def main() -> None:
    db, writer, start, stop = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    store = ResultsStore(db)
    done = {r["run_id"] for r in store.rows()} if len(sys.argv) < 6 else set()
    # Kill tests pace the writer, so that a kill lands among the appends on a fast machine too.
    pause = float(os.environ.get("STORE_WRITER_PAUSE_S", "0"))
    for i in range(start, stop):
        if f"{writer}-{i:05d}" not in done:
            store.append(row(writer, i))
            time.sleep(pause)
    print("done", flush=True)


if __name__ == "__main__":
    main()
