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
    args = cli(out, "finetune.max_steps=200", "finetune.val_every_n_steps=200", "resume.every_n_steps=10")
    proc = subprocess.Popen(args, cwd=REPO, env=env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    # The rolling checkpoint of step 10 proves fine-tuning is under way.
    assert wait_for("checkpoints/teacher-*/last.ckpt", out, 300), "training never started"
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=240)
    assert proc.returncode != 0
    stored = rows(out)
    assert len(stored) == 1 and stored[0]["status"] == "failed" and "SIGTERM" in stored[0]["error"], stored
    assert "Traceback" not in err
    step = int(stored[0]["error"].split("at step ")[1].split(";")[0])
    assert 10 <= step < 200
    ckpt = next((out / "checkpoints").glob("teacher-*/last.ckpt"))
    assert torch.load(ckpt, map_location="cpu", weights_only=True)["global_step"] == step  # saved at the stop
    again = subprocess.run(args, cwd=REPO, env=env(), capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr[-2000:]
    assert f"Resuming from checkpoint {ckpt} at step {step}" in again.stdout + again.stderr
    assert [r["status"] for r in rows(out)] == ["failed", "ok"]


SWEEP = ("-m", "seed=0,1", "finetune.max_steps=60")  # each job fine-tunes its own teacher
#: Two jobs whose second one fine-tunes long enough (1000 steps) that a kill shortly after the
#: first job's row lands inside it on a fast, idle machine too (60 steps finished in < 2 s there).
SLOW_SECOND_JOB = ("-m", "finetune.max_steps=60,1000")


def check_after_kill_and_rerun(out: Path, sweep: tuple[str, ...] = SWEEP) -> None:
    """After a kill: the store is sound; the re-run completes exactly the missing work."""
    before = rows(out)
    ok_before = {r["config_hash"]: r["run_id"] for r in before if r["status"] == "ok"}
    assert len(ok_before) == len([r for r in before if r["status"] == "ok"]), "an ok config stored twice"
    rerun = subprocess.run(cli(out, *sweep), cwd=REPO, env=env(), capture_output=True, text=True, timeout=900)
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    after = rows(out)
    ok_after = {r["config_hash"]: r for r in after if r["status"] == "ok"}
    assert len([r for r in after if r["status"] == "ok"]) == 2 == len(ok_after)
    for hash_, run_id in ok_before.items():  # done work is not redone ...
        assert ok_after[hash_]["run_id"] == run_id
    assert len(after) == len(before) + (2 - len(ok_before))  # ... and exactly the missing work is done
    assert not list(out.glob("runs/*/export.partial")) or all(
        not (p.parent / "export").exists() for p in out.glob("runs/*/export.partial"))


def kill_trials(tmp_path: Path, trials: int, seed: int) -> tuple[int, int]:
    """SIGKILL a 2-config sweep at random moments (fine-tuning, evaluation, export, row write),
    then re-run it; the store is checked after each kill and after each re-run."""
    rng = random.Random(seed)
    reference = tmp_path / "reference"
    start = time.time()
    subprocess.run(cli(reference, *SWEEP), cwd=REPO, env=env(), capture_output=True, text=True, timeout=900,
                   check=True)
    duration = time.time() - start
    assert [r["status"] for r in rows(reference)] == ["ok", "ok"]
    survived = 0
    for trial in range(trials):
        out = tmp_path / f"trial{trial}"
        proc = subprocess.Popen(cli(out, *SWEEP), cwd=REPO, env=env(), stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
        kill_at = rng.uniform(0.15, 1.0) * duration
        time.sleep(kill_at)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        check_after_kill_and_rerun(out)
        survived += 1
        print(f"kill trial {trial}: killed after {kill_at:.1f}s of ~{duration:.0f}s; survived", flush=True)
    return survived, trials


def test_sigkill_during_the_second_job_of_a_sweep(tmp_path):
    """Short version (default run): kill once the first job's row is stored, while the second
    job fine-tunes/evaluates/exports; the re-run skips the first job and completes the second."""
    out = tmp_path / "r"
    proc = subprocess.Popen(cli(out, *SLOW_SECOND_JOB), cwd=REPO, env=env(), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.time() + 600
    while time.time() < deadline and not [r for r in rows(out) if r["status"] == "ok"]:
        time.sleep(0.2)
    time.sleep(random.Random(0).uniform(0.2, 1.5))
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert len([r for r in rows(out) if r["status"] == "ok"]) == 1, "the kill did not land in the second job"
    check_after_kill_and_rerun(out, SLOW_SECOND_JOB)


@pytest.mark.slow
@pytest.mark.timeout(4 * 3600)
def test_sigkill_at_random_moments_many_trials(tmp_path):
    survived, trials = kill_trials(tmp_path, trials=20, seed=1)
    print(f"CLI kill trials survived: {survived}/{trials}")
    assert survived == trials


def test_same_config_and_seed_give_identical_metrics_on_rerun(tmp_path):
    """Two independent runs (no shared teacher cache) on CPU: bit-identical metrics (eff.* timings aside)."""
    results = []
    for name in ("a", "b"):
        out = tmp_path / name
        subprocess.run(cli(out, "threads=1", "evaluation.efficiency.enabled=false"), cwd=REPO, env=env(), capture_output=True,
                       text=True, timeout=600, check=True)
        results.append(rows(out)[0])
    first, second = results
    measured = [k for k in first if k.startswith(("quality.", "calib.")) and isinstance(first[k], float)]
    assert measured
    for key in measured:
        assert first[key] == second[key] or (first[key] != first[key] and second[key] != second[key]), key
    assert first["data_fingerprint"] == second["data_fingerprint"] and first["config_hash"] == second["config_hash"]
    assert first["debug"] == "fast"  # made with debug=fast: marked, so reports can leave it out


def test_disk_full_while_writing_the_export_is_one_sentence_and_a_failed_row(tmp_path):
    """The file-size limit (RLIMIT_FSIZE, SIGXFSZ ignored) makes every write past 300 kB fail with
    EFBIG, as a full disk fails with ENOSPC: the tiny model's export (~600 kB) cannot be written."""
    import resource

    out = tmp_path / "r"
    subprocess.run(cli(out, "evaluation.efficiency.enabled=false"), cwd=REPO, env=env(), capture_output=True,
                   text=True, timeout=600, check=True)  # caches the teacher, so the next run only exports

    def small_disk():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (300_000, 300_000))

    proc = subprocess.run(cli(out, "method=prune_magnitude", "evaluation.efficiency.enabled=false"), cwd=REPO,
                          env=env(), capture_output=True, text=True, timeout=600, preexec_fn=small_disk)
    assert proc.returncode != 0
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("compbench: run failed: the disk is full while writing the export"), last
    assert "Traceback" not in proc.stderr
    stored = rows(out)
    assert [r["status"] for r in stored] == ["ok", "failed"] and "disk is full" in stored[1]["error"]
    run_dir = Path(stored[1]["run_dir"])
    assert not (run_dir / "export").exists() and not (run_dir / "export.partial").exists()
