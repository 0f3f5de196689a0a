"""Tracking: what an offline W&B run logged, read back from its run directory; online without
credentials fails at once; CSV, TensorBoard and W&B together."""

import math
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from compbench.errors import ConfigError
from compbench.tracking import Tracker, wandb_credentials_present
from wandb_reader import read_offline_run  # tests/tracking/, on sys.path under pytest's rootdir-less import mode

FAST = ("debug=fast", "evaluation.robustness.enabled=false", "evaluation.efficiency.repeats=2",
        "trainer.enable_progress_bar=false")


def same(logged, stored) -> bool:
    if isinstance(stored, float) and math.isnan(stored):
        return logged in ("NaN", "nan") or (isinstance(logged, float) and math.isnan(logged))
    return logged == stored


def test_offline_run_logs_config_summary_and_artifacts(run_compbench):
    pytest.importorskip("tensorboard")
    _, rows = run_compbench(*FAST, "logger=[csv,tensorboard,wandb]", "logger.wandb.mode=offline", "sweep_id=study1")
    (row,) = rows
    assert row["status"] == "ok", row["error"]
    run_dir = Path(row["run_dir"])
    (offline,) = (run_dir / "wandb").glob("offline-run-*")
    logged = read_offline_run(offline)

    for column, value in row.items():
        assert column in logged["summary"], column
        assert same(logged["summary"][column], value), (column, logged["summary"][column], value)
    run = logged["run"]
    assert run.run_group == "study1" and run.job_type == "none"
    assert {"model:tiny_afriberta", "task:smoke"} <= set(run.tags)
    assert logged["config"]["model"]["name"] == "tiny_afriberta" and logged["config"]["seed"] == 0
    assert "finetune-train/loss" in logged["summary"]  # the phase metrics, through WandbLogger
    kinds = {kind: files for _, kind, files in logged["artifacts"]}
    assert kinds == {"reliability": ["calibration.npz"], "predictions": ["predictions_test.conll"]}
    # The other two loggers wrote their own files for the same phase.
    assert list(run_dir.glob("finetune/version_*/metrics.csv"))
    assert list(run_dir.glob("finetune/version_*/events.out.tfevents.*"))


def test_online_without_credentials_fails_before_any_training(run_compbench, tmp_path, monkeypatch):
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("NETRC", str(tmp_path / "no-netrc"))
    proc, rows = run_compbench(*FAST, "logger=wandb", "logger.wandb.mode=online", check=False)
    assert proc.returncode == 1
    (row,) = rows
    assert row["status"] == "failed" and row["error"].startswith("ConfigError: logger.wandb.mode=online needs W&B")
    assert not row["teacher_hash"] and row["duration_s"] < 5  # refused before the teacher or any step
    assert not list(Path(row["run_dir"]).glob("finetune"))


def test_tracker_checks(tmp_path, monkeypatch):
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("NETRC", str(tmp_path / "netrc"))
    assert not wandb_credentials_present()
    cfg = OmegaConf.create({"wandb": {"mode": "online"}})
    with pytest.raises(ConfigError, match="WANDB_API_KEY"):
        Tracker(cfg, tmp_path)
    (tmp_path / "netrc").write_text("machine api.wandb.ai\n  login user\n  password secret\n")
    assert wandb_credentials_present()
    import compbench.hub

    monkeypatch.setattr(compbench.hub, "host_reachable", lambda url, timeout=3.0: True)
    Tracker(cfg, tmp_path)  # credentials present, W&B reachable: accepted (nothing else contacts the network)
    monkeypatch.setattr(compbench.hub, "host_reachable", lambda url, timeout=3.0: False)
    with pytest.raises(ConfigError, match="unreachable from this machine; use logger.wandb.mode=offline"):
        Tracker(cfg, tmp_path)  # no network: refused at once instead of hanging in wandb.init
    with pytest.raises(ConfigError, match="must be one of online, offline, disabled"):
        Tracker(OmegaConf.create({"wandb": {"mode": "ofline"}}), tmp_path)
    assert Tracker(OmegaConf.create({}), tmp_path).phase_loggers("finetune") == []
