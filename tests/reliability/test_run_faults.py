"""Faults during real CLI runs: divergence, SIGTERM, SIGKILL at random moments, re-run reproducibility."""

from __future__ import annotations

import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from compbench.records.store import ResultsStore

REPO = Path(__file__).resolve().parents[2]
CHEAP = ("logger=none", "debug=fast", "evaluation.robustness.enabled=false", "evaluation.efficiency.repeats=2",
         "evaluation.efficiency.warmup=1", "task.max_train_samples=128")


def cli(out: Path, *args: str) -> list[str]:
    flags = [a for a in args if a == "-m"]  # Hydra's argparse wants flags before the overrides
    return [sys.executable, "-m", "compbench.cli", *flags, f"paths.output_dir={out}", *CHEAP,
            *(a for a in args if a != "-m")]


def env() -> dict:
    return {**os.environ, "OMP_NUM_THREADS": "1", "WANDB_MODE": "disabled",
            "PYTHONPATH": os.pathsep.join([str(REPO / "src"), os.environ.get("PYTHONPATH", "")])}


def rows(out: Path) -> list[dict]:
    db = out / "compbench.db"
    if not db.exists():
        return []
    with sqlite3.connect(db) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    return ResultsStore(db).rows()


def test_divergence_stops_within_bounded_steps_and_the_sweep_continues(tmp_path):
    out = tmp_path / "r"
    proc = subprocess.run(cli(out, "-m", "finetune.lr=1e30,1e-3", "finetune.max_steps=10"), cwd=REPO, env=env(),
                          capture_output=True, text=True, timeout=600)
    stored = rows(out)
    assert len(stored) == 2, proc.stderr[-2000:]
    failed = [r for r in stored if r["status"] == "failed"]
    assert len(failed) == 1 and "diverged" in failed[0]["error"] and "lower finetune.lr" in failed[0]["error"]
    step = int(failed[0]["error"].split("at step ")[1].split(")")[0])
    assert step < 10  # stopped at the first non-finite step, not after the whole phase
    assert [r["status"] for r in stored].count("ok") == 1


def wait_for(path_glob: str, root: Path, timeout: float) -> bool:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if list(root.glob(path_glob)):
            return True
        time.sleep(0.05)
    return False


def test_sigterm_checkpoints_exits_cleanly_and_resumes(tmp_path):
    import torch

    out = tmp_path / "r"
    args = cli(out, "finetune.max_steps=600", "finetune.val_every_n_steps=600", "resume.every_n_steps=20")
    proc = subprocess.Popen(args, cwd=REPO, env=env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    # The rolling checkpoint of step 20 proves fine-tuning is under way.
    assert wait_for("checkpoints/teacher-*/last.ckpt", out, 300), "training never started"
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=240)
    assert proc.returncode != 0
    stored = rows(out)
    assert len(stored) == 1 and stored[0]["status"] == "failed" and "SIGTERM" in stored[0]["error"], stored
    assert "Traceback" not in err
    step = int(stored[0]["error"].split("at step ")[1].split(";")[0])
    assert 20 <= step < 600
    ckpt = next((out / "checkpoints").glob("teacher-*/last.ckpt"))
    assert torch.load(ckpt, map_location="cpu", weights_only=True)["global_step"] == step  # saved at the stop
    again = subprocess.run(args, cwd=REPO, env=env(), capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr[-2000:]
    assert f"Resuming from checkpoint {ckpt} at step {step}" in again.stdout + again.stderr
    assert [r["status"] for r in rows(out)] == ["failed", "ok"]


SWEEP = ("-m", "method=none,prune_magnitude", "finetune.max_steps=60")


def kill_trials(tmp_path: Path, trials: int, seed: int) -> tuple[int, int]:
    """SIGKILL a 2-config sweep at random moments (fine-tuning, evaluation, export, row write),
    re-run it, and check the store after each kill and after the re-run."""
    rng = random.Random(seed)
    reference = tmp_path / "reference"
    start = time.time()
    subprocess.run(cli(reference, *SWEEP), cwd=REPO, env=env(),
                   capture_output=True, text=True, timeout=900, check=True)
    duration = time.time() - start
    ref_rows = {r["method"]: r for r in rows(reference)}
    assert len(ref_rows) == 2 and all(r["status"] == "ok" for r in ref_rows.values())
    survived = 0
    for trial in range(trials):
        out = tmp_path / f"trial{trial}"
        proc = subprocess.Popen(cli(out, *SWEEP), cwd=REPO, env=env(), stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
        time.sleep(rng.uniform(0.2, 1.0) * duration)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        before = rows(out)
        ok_before = {r["config_hash"]: r["run_id"] for r in before if r["status"] == "ok"}
        assert len(ok_before) == len([r for r in before if r["status"] == "ok"]), "an ok config stored twice"
        rerun = subprocess.run(cli(out, *SWEEP), cwd=REPO, env=env(), capture_output=True, text=True, timeout=900)
        assert rerun.returncode == 0, rerun.stderr[-2000:]
        after = rows(out)
        ok_after = {r["config_hash"]: r for r in after if r["status"] == "ok"}
        assert len([r for r in after if r["status"] == "ok"]) == 2 == len(ok_after)
        for hash_, run_id in ok_before.items():  # done work is not redone ...
            assert ok_after[hash_]["run_id"] == run_id
        assert len(after) == len(before) + (2 - len(ok_before))  # ... and exactly the missing work is
        assert not list(out.glob("runs/*/export.partial")) or all(
            (p.parent / "record.json").exists() for p in out.glob("runs/*/export.partial"))
        survived += 1
    return survived, trials


def test_sigkill_at_random_moments_short(tmp_path):
    survived, trials = kill_trials(tmp_path, trials=2, seed=0)
    print(f"CLI kill trials survived: {survived}/{trials}")
    assert survived == trials


@pytest.mark.slow
def test_sigkill_at_random_moments_many_trials(tmp_path):
    survived, trials = kill_trials(tmp_path, trials=20, seed=1)
    print(f"CLI kill trials survived: {survived}/{trials}")
    assert survived == trials


def test_same_config_and_seed_give_identical_metrics_on_rerun(tmp_path):
    """Two independent runs (no shared teacher cache) on CPU: bit-identical metrics (eff.* timings aside)."""
    results = []
    for name in ("a", "b"):
        out = tmp_path / name
        subprocess.run(cli(out, "finetune.max_steps=20", "threads=1"), cwd=REPO, env=env(), capture_output=True,
                       text=True, timeout=600, check=True)
        results.append(rows(out)[0])
    first, second = results
    measured = [k for k in first if k.startswith(("quality.", "calib.")) and isinstance(first[k], float)]
    assert measured
    for key in measured:
        assert first[key] == second[key] or (first[key] != first[key] and second[key] != second[key]), key
    assert first["data_fingerprint"] == second["data_fingerprint"] and first["config_hash"] == second["config_hash"]
