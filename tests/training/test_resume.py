"""Resuming: a run killed mid-training continues from its checkpoint; the store never holds a
partial row; broken checkpoints are dropped rather than crash-looping."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import torch
from conftest import REPO

from compbench.records.schema import config_hash
from compbench.records.store import ResultsStore
from compbench.training.resume import resumable_checkpoint

# A fine-tuning long enough to be killed in the middle, checkpointed every 5 steps.
LONG_FINETUNE = ("debug=fast", "finetune.max_steps=150", "finetune.val_every_n_steps=100", "resume.every_n_steps=5",
                 "evaluation.robustness.enabled=false", "evaluation.efficiency.repeats=2",
                 "trainer.enable_progress_bar=false", "logger=none")


def test_sigkilled_run_resumes_from_its_checkpoint(tmp_path, run_compbench):
    out = tmp_path / "results"
    cmd = [sys.executable, "-m", "compbench.cli", f"paths.output_dir={out}", *LONG_FINETUNE]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "WANDB_MODE": "disabled"}
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    deadline = time.time() + 120
    checkpoints = out / "checkpoints"
    while time.time() < deadline and not list(checkpoints.glob("teacher-*/last.ckpt")):
        assert proc.poll() is None, "the run ended before it could be killed"
        time.sleep(0.2)
    time.sleep(1.0)  # a few more steps, so the kill lands mid-training
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert ResultsStore(out / "compbench.db").rows() == []  # killed: no row, not a partial one

    _, rows = run_compbench(*LONG_FINETUNE)
    assert len(rows) == 1 and rows[0]["status"] == "ok"
    log = Path(rows[0]["run_dir"], "run.log").read_text()
    resumed_at = int(log.split("Resuming from checkpoint ")[1].split(" at step ")[1].split()[0])
    assert 5 <= resumed_at < 150
    assert not list(checkpoints.glob("teacher-*"))  # the cached teacher replaced its checkpoint


def test_unreadable_checkpoint_is_removed(tmp_path):
    (tmp_path / "last.ckpt").write_bytes(b"truncated by a kill")
    assert resumable_checkpoint(tmp_path) is None
    assert not (tmp_path / "last.ckpt").exists()
    torch.save({"global_step": 7, "state_dict": {"w": torch.zeros(2)}}, tmp_path / "last.ckpt")
    assert resumable_checkpoint(tmp_path) == tmp_path / "last.ckpt"
    assert resumable_checkpoint(tmp_path / "missing") is None


def test_resume_settings_do_not_change_the_config_hash():
    base = {"seed": 0, "method": {"name": "none"}}
    assert config_hash({**base, "force": True, "resume": {"every_n_steps": 5}}) == config_hash(base)
    assert config_hash({**base, "seed": 1}) != config_hash(base)
