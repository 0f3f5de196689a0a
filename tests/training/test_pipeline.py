"""The pipeline of one run, in-process on tiny configs: stage order, the row written in the
``finally``, and refusals before any expensive work. (End-to-end runs of the CLI by subprocess
are in ``tests/test_cli_e2e.py``; every method on every family in ``tests/methods/test_methods_pipeline.py``.)"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from omegaconf import open_dict
from run_harness import CONF_DIR, compose_run, note, read_events, set_method_chain, spy_stage

from compbench.errors import ConfigError
from compbench.methods.export import load_export
from compbench.models.loader import ModelSpec
from compbench.records.store import ResultsStore
from compbench.training import pipeline
from compbench.records.run_record import store_row
from compbench.training.pipeline import run


def stored_rows(cfg) -> list[dict]:
    db = Path(cfg.paths.db)
    return ResultsStore(db).rows() if db.exists() else []


def trace_expensive_work(monkeypatch, events: Path) -> None:
    """Note the expensive stages in ``events``: tokenizer, model, teacher, evaluation, storing."""
    for cls, name in ((ModelSpec, "build_tokenizer"), (ModelSpec, "build_model"), (ResultsStore, "append")):
        original = getattr(cls, name)

        def traced(*args, _original=original, _name=name, **kwargs):
            note(events, _name)
            return _original(*args, **kwargs)

        monkeypatch.setattr(cls, name, traced)
    for name in ("get_or_train_teacher", "evaluate_all"):
        original = getattr(pipeline, name)

        def traced(*args, _original=original, _name=name, **kwargs):
            note(events, _name)
            return _original(*args, **kwargs)

        monkeypatch.setattr(pipeline, name, traced)


@pytest.mark.parametrize("hook", ["prepare", "finalize", "export"])
def test_a_method_failing_after_the_teacher_still_writes_one_failed_row(hook, tmp_path):
    events = tmp_path / "events.txt"
    cfg = compose_run(tmp_path / "out", "decoder")
    with open_dict(cfg):
        cfg.method = spy_stage("spy", events, fail_in=hook)
    row, error = run(cfg, CONF_DIR)

    message = f"spy method 'spy' failed in {hook}"
    assert isinstance(error, RuntimeError) and str(error) == message
    assert f"spy.{hook}" in "\n".join(read_events(events))
    (stored,) = stored_rows(cfg)  # exactly one row
    assert stored["run_id"] == row["run_id"] and stored["status"] == "failed"
    assert stored["error"] == f"RuntimeError: {message}"
    assert stored["teacher_hash"] and stored["duration_s"] > 0  # it failed after the teacher stage
    assert not any(k.startswith(("quality.", "calib.", "robust.")) for k in stored if stored[k] is not None)
    run_dir = Path(stored["run_dir"])
    record = json.loads((run_dir / "record.json").read_text())
    assert record["row"]["run_id"] == row["run_id"] and record["row"]["status"] == "failed"
    assert record["config"]["method"]["fail_in"] == hook
    assert message in (run_dir / "traceback.txt").read_text()
    # No artifact that looks whole, and no half-written one left behind.
    assert not (run_dir / "export").exists() and not (run_dir / "export.partial").exists()


def test_stages_run_in_order_and_the_chain_works_on_a_copy_of_the_teacher(tmp_path, monkeypatch):
    events = tmp_path / "events.txt"
    trace_expensive_work(monkeypatch, events)
    seen = {}
    evaluate_all = pipeline.evaluate_all

    def spy_evaluate(task, model, baseline, *args, **kwargs):
        seen["model"], seen["baseline"] = model, baseline
        return evaluate_all(task, model, baseline, *args, **kwargs)

    monkeypatch.setattr(pipeline, "evaluate_all", spy_evaluate)
    cfg = set_method_chain(compose_run(tmp_path / "out", "decoder"),
                           spy_stage("first", events, zero_weights=True), spy_stage("second", events))
    row, error = run(cfg, CONF_DIR)
    assert error is None and row["status"] == "ok", row["error"]

    assert read_events(events) == [
        "first.check", "second.check",                       # every stage validated before any work
        "build_tokenizer", "get_or_train_teacher", "build_model",
        "first.check", "first.prepare after=-", "first.finalize",
        "second.check", "second.prepare after=first", "second.finalize",  # stage 2 gets stage 1's model
        "second.export",                                     # the last stage writes the artifact
        "evaluate_all",
        "append",                                            # one row, stored last
    ]
    assert row["method"] == "first+second"
    # The first stage zeroed the weights of the model it was given: the evaluated model has
    # them, the teacher (the fp32 baseline of the latency ratio) does not.
    assert all(float(p.detach().abs().sum()) == 0 for p in seen["model"].parameters())
    assert all(float(p.detach().abs().sum()) > 0 for n, p in seen["baseline"].named_parameters() if n.endswith("weight"))
    (stored,) = stored_rows(cfg)
    assert stored["run_id"] == row["run_id"] and stored["status"] == "ok"


@pytest.mark.parametrize("bad", ["second stage refuses", "evaluation device"])
def test_bad_config_is_refused_before_any_expensive_work(bad, tmp_path, monkeypatch):
    events = tmp_path / "events.txt"
    trace_expensive_work(monkeypatch, events)
    overrides = ["evaluation.device=tpu"] if bad == "evaluation device" else []
    cfg = compose_run(tmp_path / "out", "decoder", *overrides)
    second = spy_stage("second", events, fail_in="check" if bad == "second stage refuses" else "")
    set_method_chain(cfg, spy_stage("first", events), second)
    row, error = run(cfg, CONF_DIR)

    assert isinstance(error, ConfigError)
    expected = "spy method 'second' refuses this run." if bad != "evaluation device" else "evaluation.device='tpu'"
    assert expected in row["error"] and "\n" not in row["error"]
    # Nothing expensive ran: no tokenizer trained, no model built, no teacher, no stage prepared.
    assert read_events(events) == ["first.check", "second.check", "append"]
    assert not (Path(cfg.paths.cache_dir) / "teachers").exists()
    (stored,) = stored_rows(cfg)
    assert stored["status"] == "failed" and stored["error"] == row["error"]


def test_a_row_breaking_the_contract_is_stored_as_failed_saying_why(tmp_path):
    db = tmp_path / "compbench.db"
    row = {"run_id": "r1", "status": "ok", "error": "", "model": "m", "task": "t", "seed": 0,
           "quality.f1": 0.5, "not_a_column": 1}
    store_row(db, row)
    (stored,) = ResultsStore(db).rows()
    assert stored["run_id"] == "r1" and stored["status"] == "failed"
    assert "not_a_column" in stored["error"] and "\n" not in stored["error"]
    assert stored["model"] == "m" and stored["seed"] == 0  # the run stays identifiable
    assert stored.get("quality.f1") is None  # no metric of a row that broke the contract is trusted


def test_method_none_run_stores_an_export_whose_size_is_the_teachers(tmp_path):
    """The size columns compare the export with the fp32 teacher on disk: for method=none they
    hold the same safetensors weights, so the ratio is that of the files (no compression)."""
    cfg = compose_run(tmp_path / "out", "encoder", "evaluation.robustness.enabled=false",
                      "evaluation.calibration.enabled=false")
    row, error = run(cfg, CONF_DIR)
    assert error is None, row["error"]
    teacher = next((Path(cfg.paths.cache_dir) / "teachers").glob(f"{row['teacher_hash']}/model.safetensors"))
    export = Path(row["run_dir"]) / "export" / "model.safetensors"
    assert export.stat().st_size == pytest.approx(teacher.stat().st_size, rel=1e-3)
    assert row["eff.compression_ratio"] == pytest.approx(1.0, rel=0.05)
    assert row["eff.params"] == sum(p.numel() for p in load_export(export.parent).parameters())
