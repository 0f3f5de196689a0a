"""The SQLite results store: types, dynamic columns, concurrency, queries and exports."""

import math
import multiprocessing
import sqlite3
import threading
import time

import numpy as np
import pytest

from compbench.records import store as store_module
from compbench.records.schema import RowError
from compbench.records.store import ResultsStore


def row(run_id, **extra):
    return {"run_id": run_id, "status": "ok", "error": "", **extra}


def declared_types(path):
    with sqlite3.connect(path) as conn:
        return {r[1]: r[2] for r in conn.execute("PRAGMA table_info(runs)")}


def test_round_trip_of_types(tmp_path):
    store = ResultsStore(tmp_path / "r.db")
    written = row(
        "a", seed=3, lang="", duration_s=12.5, teacher_reused=False, started_at="2024-05-01T10:00:00+00:00",
        **{"method.w_bits": 4, "method.per_channel": True, "method.scheme": "asym", "method.group": None,
           "quality.f1": math.nan, "quality.ppl": math.inf, "calib.ece": -math.inf,
           "eff.size_mb": np.float32(1.5), "eff.params": np.int64(123)},
    )
    store.append(written)
    (back,) = store.rows()
    for name, value in written.items():
        expected = value.item() if isinstance(value, np.generic) else value
        if isinstance(expected, float) and math.isnan(expected):
            assert isinstance(back[name], float) and math.isnan(back[name]), name
        else:
            assert back[name] == expected and type(back[name]) is type(expected), name
    # Columns the row did not have are None ("not measured"), not NaN.
    assert back["model"] is None and back["duration_s"] == 12.5
    types = declared_types(store.path)
    assert types["method.w_bits"] == "INTEGER" and types["method.per_channel"] == "BOOLEAN"
    assert types["quality.f1"] == "REAL" and types["method.scheme"] == "TEXT" and types["seed"] == "INTEGER"
    # In SQL the NaN cell is NULL (aggregates skip it), the infinities are real infinities.
    with sqlite3.connect(store.path) as conn:
        f1, ppl, nan_cols = conn.execute('SELECT "quality.f1", "quality.ppl", _nan_columns FROM runs').fetchone()
    assert f1 is None and ppl == math.inf and nan_cols == "quality.f1"
    frame = store.frame()
    assert frame.loc[0, "seed"] == 3 and frame["seed"].dtype == np.int64
    assert frame["teacher_reused"].dtype == bool and frame.loc[0, "eff.size_mb"] == 1.5
    assert math.isnan(frame.loc[0, "quality.f1"]) and frame.loc[0, "quality.ppl"] == math.inf
    assert list(frame.columns)[:3] == ["run_id", "config_hash", "sweep_id"]


def test_wal_mode_and_empty_store(tmp_path):
    store = ResultsStore(tmp_path / "sub" / "r.db")
    assert len(store) == 0 and store.rows() == [] and store.latest_by_config_hash() == {}
    assert list(store.frame().columns)[0] == "run_id"
    store.append(row("a"))
    with sqlite3.connect(store.path) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert len(store) == 1


def test_dynamic_columns_appear_and_old_rows_read_none(tmp_path):
    store = ResultsStore(tmp_path / "r.db")
    store.append(row("a", method="kd", **{"method.alpha": 0.5, "quality.f1": 0.8}))
    store.append(row("b", method="prune+quant", **{
        "method.prune.sparsity": 0.5, "method.quant.w_bits": 2, "robust.typo 10%.f1": 0.7,
        'eff.odd"name': 1.0,
    }))
    a, b = store.rows()
    assert a["method.prune.sparsity"] is None and a["robust.typo 10%.f1"] is None
    assert b["method.alpha"] is None and b["robust.typo 10%.f1"] == 0.7 and b['eff.odd"name'] == 1.0
    frame = store.frame()
    assert list(frame.columns)[-6:] == [
        "method.alpha", "method.prune.sparsity", "method.quant.w_bits", "quality.f1",
        "robust.typo 10%.f1", 'eff.odd"name',
    ]
    # An int column that later receives a fraction reads back as float, not truncated.
    store.append(row("c", **{"method.quant.w_bits": 2.5}))
    assert store.frame()["method.quant.w_bits"].tolist()[1:] == [2.0, 2.5]
    # A parameter that is a number in one run and a word in another is kept as text.
    store.append(row("d", **{"method.alpha": "auto"}))
    alpha = store.frame()["method.alpha"]
    assert alpha[0] == "0.5" and alpha[3] == "auto" and alpha[1:3].isna().all()
    assert store.rows()[0]["method.alpha"] == 0.5  # the store itself keeps the number


def test_failed_insert_adds_no_column(tmp_path):
    store = ResultsStore(tmp_path / "r.db")
    store.append(row("a", **{"quality.f1": 0.8}))
    with pytest.raises(ValueError, match="already in"):
        store.append(row("a", **{"quality.brand_new": 1.0}))
    assert "quality.brand_new" not in declared_types(store.path)
    assert len(store) == 1


def test_refuses_bad_rows_and_case_clashes(tmp_path):
    store = ResultsStore(tmp_path / "r.db")
    with pytest.raises(RowError):
        store.append(row("a", foo=1))
    store.append(row("a", **{"quality.rougeL": 0.3}))
    with pytest.raises(ValueError, match="only in case"):
        store.append(row("b", **{"quality.rougel": 0.3}))
    assert len(store) == 1


def test_retries_when_another_writer_holds_the_lock(tmp_path, monkeypatch):
    store = ResultsStore(tmp_path / "r.db")
    store.append(row("a"))
    monkeypatch.setattr(store_module, "BUSY_TIMEOUT_MS", 0)  # fail fast into our own back-off
    blocker = sqlite3.connect(store.path, isolation_level=None, check_same_thread=False)
    blocker.execute("BEGIN IMMEDIATE")
    release = threading.Timer(0.4, lambda: blocker.execute("COMMIT"))
    release.start()
    started = time.monotonic()
    store.append(row("b"))
    assert time.monotonic() - started >= 0.3
    release.join()
    blocker.close()
    assert [r["run_id"] for r in store.rows()] == ["a", "b"]

    monkeypatch.setattr(store_module, "MAX_RETRIES", 0)
    blocker = sqlite3.connect(store.path, isolation_level=None)
    blocker.execute("BEGIN IMMEDIATE")
    with pytest.raises(sqlite3.OperationalError, match="locked"):
        store.append(row("c"))
    blocker.execute("ROLLBACK")
    blocker.close()


WORKERS, APPENDS = 4, 25
# The spawned workers import this module; it imports pandas only inside tests so they start fast.


def _concurrent_writer(path, worker, barrier):
    store = ResultsStore(path)
    barrier.wait()
    for i in range(APPENDS):
        # Every worker also introduces its own columns, so ALTER TABLEs race with INSERTs.
        store.append(row(f"w{worker}-{i}", seed=i, config_hash=f"h{worker}",
                         **{f"quality.m{worker}": float(i), f"method.p{worker}_{i % 3}": i}))


def test_four_processes_append_concurrently_without_loss_or_duplicates(tmp_path):
    path = tmp_path / "r.db"
    ResultsStore(path).append(row("seed-row"))  # the table exists; workers race on rows/columns
    ctx = multiprocessing.get_context("spawn")
    barrier = ctx.Barrier(WORKERS)
    procs = [ctx.Process(target=_concurrent_writer, args=(path, w, barrier)) for w in range(WORKERS)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=120)
    assert [p.exitcode for p in procs] == [0] * WORKERS
    rows = ResultsStore(path).rows()[1:]
    ids = [r["run_id"] for r in rows]
    assert len(ids) == WORKERS * APPENDS and len(set(ids)) == WORKERS * APPENDS
    assert set(ids) == {f"w{w}-{i}" for w in range(WORKERS) for i in range(APPENDS)}
    for r in rows:
        worker, i = (int(x) for x in r["run_id"][1:].split("-"))
        assert r[f"quality.m{worker}"] == float(i) and r[f"method.p{worker}_{i % 3}"] == i


def test_latest_by_config_hash(tmp_path):
    store = ResultsStore(tmp_path / "r.db")
    store.append(row("1", config_hash="h1", started_at="2024-01-01T00:00:00+00:00", **{"quality.f1": 0.1}))
    store.append(row("2", config_hash="h1", started_at="2024-01-02T00:00:00+00:00", **{"quality.f1": 0.2}))
    store.append({**row("3", config_hash="h2", started_at="2024-01-03T00:00:00+00:00"),
                  "status": "failed", "error": "boom"})
    store.append(row("4", config_hash="h3", started_at="2024-01-01T00:00:00+00:00"))
    store.append(row("5", config_hash="h3", started_at="2023-12-31T00:00:00+00:00"))  # older, appended later
    latest = store.latest_by_config_hash()
    assert {h: r["run_id"] for h, r in latest.items()} == {"h1": "2", "h2": "3", "h3": "4"}
    assert set(store.latest_by_config_hash(status="ok")) == {"h1", "h3"}


def test_export_round_trip(tmp_path):
    import pandas as pd
    import pyarrow.parquet as pq

    store = ResultsStore(tmp_path / "r.db")
    store.append(row("a", model="gpt2", seed=0, teacher_reused=True, **{"quality.f1": math.nan, "eff.size_mb": 1.25}))
    store.append(row("b", model="gpt2", seed=1, teacher_reused=False, **{"quality.f1": 0.3,
                                                                        "eff.size_mb": math.inf}))
    store.append(row("c", model="gpt2", seed=2, teacher_reused=True, **{"eff.size_mb": 0.1 + 0.2}))
    csv_path, parquet_path = store.export(tmp_path / "out" / "runs.csv", tmp_path / "out" / "runs.parquet")
    frame = store.frame()
    pd.testing.assert_frame_equal(pd.read_parquet(parquet_path), frame)
    text = csv_path.read_text().splitlines()
    assert text[1].endswith("nan,1.25") and text[3].endswith(",0.30000000000000004")  # NaN vs missing
    back = pd.read_csv(csv_path)
    numeric = ["seed", "quality.f1", "eff.size_mb", "teacher_reused"]
    pd.testing.assert_frame_equal(back[numeric], frame[numeric])
    # CSV cannot tell an empty string from a missing value; parquet can.
    assert back["error"].isna().all() and (frame["error"] == "").all()
    f1 = pq.read_table(parquet_path).column("quality.f1").to_pylist()
    assert math.isnan(f1[0]) and f1[1] == 0.3 and f1[2] is None
