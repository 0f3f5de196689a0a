"""``records/run_record.py``: whatever the body does, one ``record.json`` and one stored row."""

from __future__ import annotations

import json

import pytest

from compbench.records.run_record import identity_columns, new_run_id, run_record
from compbench.records.store import ResultsStore


def _row(tmp_path, **extra):
    return identity_columns(run_id=new_run_id(), config_hash="c0ffee", sweep_id="", run_dir=tmp_path, model="m",
                            task="t", lang="", method="none", seed=0, **extra)


def test_an_ok_body_is_recorded_with_its_columns(tmp_path):
    db = tmp_path / "results.db"
    with run_record(db, tmp_path, _row(tmp_path, debug="fast"), config={"seed": 0}) as row:
        row.update({"status": "ok", "quality.f1": 0.5})
    record = json.loads((tmp_path / "record.json").read_text())
    assert record["config"] == {"seed": 0} and record["row"]["quality.f1"] == 0.5 and record["row"]["duration_s"] >= 0
    (stored,) = ResultsStore(db).rows()
    assert stored["status"] == "ok" and stored["debug"] == "fast" and stored["run_id"] == row["run_id"]


def test_a_failing_body_is_a_failed_row_and_the_exception_goes_on(tmp_path):
    db = tmp_path / "results.db"
    with pytest.raises(KeyError):
        with run_record(db, tmp_path, _row(tmp_path)):
            raise KeyError("boom")
    (stored,) = ResultsStore(db).rows()
    assert stored["status"] == "failed" and stored["error"] == "KeyError: 'boom'"
    assert json.loads((tmp_path / "record.json").read_text())["row"]["status"] == "failed"


def test_a_row_breaking_the_contract_is_stored_as_failed_saying_why(tmp_path):
    db = tmp_path / "results.db"
    with run_record(db, tmp_path, _row(tmp_path)) as row:
        row.update({"status": "ok", "quality.f1": [0.5, 0.6]})  # a list: not a scalar
    (stored,) = ResultsStore(db).rows()
    assert stored["status"] == "failed" and stored["run_id"] == row["run_id"] and stored["error"]


def test_run_ids_sort_by_time_and_are_unique():
    ids = [new_run_id() for _ in range(50)]
    assert len(set(ids)) == 50 and all(len(i.split("-")) == 3 for i in ids)
