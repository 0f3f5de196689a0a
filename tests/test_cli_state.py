"""The CLIs hold no hidden global state: importing them looks nothing up and changes nothing in
the environment; the config tree is found in ``main``; W&B's mode goes to ``wandb.init``."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from compbench.configs import conf_dir
from compbench.errors import ConfigError

REPO = Path(__file__).resolve().parents[1]


def python(code: str, **env: str) -> subprocess.CompletedProcess:
    environ = {k: v for k, v in os.environ.items() if k not in ("WANDB_MODE", "COMPBENCH_CONF_DIR")}
    return subprocess.run([sys.executable, "-c", code], cwd=REPO, env={**environ, **env}, capture_output=True,
                          text=True, timeout=300)


def test_importing_the_clis_neither_looks_up_configs_nor_sets_wandb_mode(tmp_path):
    proc = python("import os, compbench.cli, compbench.pretrain_cli; print(os.environ.get('WANDB_MODE'))",
                  COMPBENCH_CONF_DIR=str(tmp_path / "nowhere"))
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "None"


def test_main_refuses_a_missing_config_tree_in_one_sentence(tmp_path):
    proc = python("import sys; sys.argv = ['compbench']; from compbench.cli import main; main()",
                  COMPBENCH_CONF_DIR=str(tmp_path))
    assert proc.returncode == 1
    assert proc.stderr.strip() == (f"compbench: no conf/config.yaml at {tmp_path}; install with `pip install -e .` "
                                   "from the repository or set COMPBENCH_CONF_DIR to its conf/ folder.")


def test_conf_dir_is_the_checkouts_or_the_environments(tmp_path, monkeypatch):
    monkeypatch.delenv("COMPBENCH_CONF_DIR", raising=False)
    assert conf_dir() == REPO / "conf"
    monkeypatch.setenv("COMPBENCH_CONF_DIR", str(tmp_path))
    with pytest.raises(ConfigError, match="COMPBENCH_CONF_DIR"):
        conf_dir()
    (tmp_path / "config.yaml").write_text("{}\n")
    assert conf_dir() == tmp_path


def test_the_tracker_passes_the_mode_to_wandb_and_leaves_the_environment_alone(tmp_path, monkeypatch):
    pytest.importorskip("wandb")
    from omegaconf import OmegaConf

    from compbench.tracking import Tracker

    monkeypatch.setenv("WANDB_MODE", "offline")
    tracker = Tracker(OmegaConf.create({"wandb": {"project": "p", "entity": None, "mode": "disabled",
                                                  "group": None, "tags": []}}), tmp_path)
    row = {"run_id": "r1", "model": "m", "task": "t", "lang": "", "method": "none", "status": "ok"}
    tracker.start({"seed": 0}, row, group="")
    try:
        assert tracker.wandb_run.disabled  # the config's mode, not the inherited WANDB_MODE=offline
        assert os.environ["WANDB_MODE"] == "offline"
    finally:
        tracker.finish(row)
    assert os.environ["WANDB_MODE"] == "offline"
