"""The results store under faults: concurrent writers, SIGKILL at random moments, long locks."""

from __future__ import annotations

import os
import random
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from compbench.records.store import ResultsStore
from reliability.store_writer import row as expected_row

HERE = Path(__file__).parent
REPO = HERE.parents[1]
ENV = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO / "src"), str(REPO / "tests"),
                                                    os.environ.get("PYTHONPATH", "")])}


def writer(db: Path, name: str, start: int, stop: int, pause_s: float = 0.0) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, str(HERE / "store_writer.py"), str(db), name, str(start), str(stop)],
                            env={**ENV, "STORE_WRITER_PAUSE_S": str(pause_s)},
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def assert_store_sound(db: Path) -> list[dict]:
    """Readable, integrity-checked, no duplicated run, every stored row complete and exact."""
    with sqlite3.connect(db) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    rows = ResultsStore(db).rows()
    ids = [r["run_id"] for r in rows]
    assert len(ids) == len(set(ids)), "a row is stored twice"
    for r in rows:
        name, i = r["run_id"].rsplit("-", 1)
        want = expected_row(name, int(i))
        assert {k: r[k] for k in want} == want, f"partial or altered row {r['run_id']}"
    return rows


def test_two_processes_writing_200_rows_each_store_every_row_once(tmp_path):
    db = tmp_path / "compbench.db"
    procs = [writer(db, "a", 0, 200), writer(db, "b", 0, 200)]
    for p in procs:
        out, err = p.communicate(timeout=600)
        assert p.returncode == 0, err
    rows = assert_store_sound(db)
    lost = 400 - len(rows)
    print(f"rows written concurrently: 400; rows stored: {len(rows)}; lost: {lost}")
    assert lost == 0 and sorted(r["run_id"] for r in rows) == sorted(
        [f"a-{i:05d}" for i in range(200)] + [f"b-{i:05d}" for i in range(200)])


N_ROWS = 200


def kill_trials(tmp_path: Path, trials: int, seed: int) -> int:
    """SIGKILL a writer of 200 rows at random moments; after each kill the store must be sound and
    a restart must complete exactly the missing rows. Returns the trials survived."""
    rng = random.Random(seed)
    survived, mid_write = 0, 0
    for trial in range(trials):
        db = tmp_path / f"kill{trial}.db"
        # Paced (5 ms after each row) so that polling keeps up; killed once a random number of
        # rows is stored, plus a random fraction of one append, so kills land inside appends too.
        proc = writer(db, "k", 0, N_ROWS, pause_s=0.005)
        target = rng.randint(1, N_ROWS - 20)
        deadline = time.time() + 120
        while time.time() < deadline and not (db.exists() and len(ResultsStore(db)) >= target):
            time.sleep(0.002)
        time.sleep(rng.uniform(0.0, 0.01))
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        before = assert_store_sound(db) if db.exists() else []
        mid_write += 0 < len(before) < N_ROWS
        restart = writer(db, "k", 0, N_ROWS)
        _, err = restart.communicate(timeout=300)
        assert restart.returncode == 0, err
        after = assert_store_sound(db)
        assert sorted(r["run_id"] for r in after) == [f"k-{i:05d}" for i in range(N_ROWS)]
        assert [r["run_id"] for r in after[: len(before)]] == [r["run_id"] for r in before]
        survived += 1
    assert mid_write >= trials // 2, f"only {mid_write} of {trials} kills landed while rows were being written"
    return survived


def test_store_survives_sigkill_during_row_writes(tmp_path):
    survived = kill_trials(tmp_path, trials=8, seed=0)
    print(f"store kill trials survived: {survived}/8")
    assert survived == 8


@pytest.mark.slow
def test_store_survives_sigkill_during_row_writes_many_trials(tmp_path):
    survived = kill_trials(tmp_path, trials=30, seed=1)
    print(f"store kill trials survived: {survived}/30")
    assert survived == 30


def test_row_waits_for_a_store_locked_by_another_process_for_a_while(tmp_path):
    db = tmp_path / "compbench.db"
    ResultsStore(db).append(expected_row("x", 0))
    conn = sqlite3.connect(db, isolation_level=None, check_same_thread=False)
    conn.execute("BEGIN EXCLUSIVE")  # another process holds the write lock ...
    released = threading.Event()

    def release_later():
        time.sleep(4.0)  # ... for 4 s, well past SQLite's first give-up point in a naive writer
        conn.execute("COMMIT")
        conn.close()
        released.set()

    threading.Thread(target=release_later, daemon=True).start()
    proc = writer(db, "w", 0, 3)
    _, err = proc.communicate(timeout=300)
    assert released.is_set() and proc.returncode == 0, err
    assert len(assert_store_sound(db)) == 4
