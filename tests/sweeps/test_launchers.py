"""Multiruns on real launchers: crash isolation, one row per job, resume, shared teacher, DDP."""

from pathlib import Path

import pytest

pytest.importorskip("hydra_plugins.hydra_joblib_launcher")

#: A tiny run in a few seconds: debug=fast, no perturbations, 2 latency repeats, no progress bar.
FAST = ("debug=fast", "evaluation.robustness.enabled=false", "evaluation.efficiency.repeats=2",
        "trainer.enable_progress_bar=false")

# "-m" goes after the overrides: argparse does not take a flag between positional arguments.
# Six jobs sharing one teacher; sparsity 1.5 is refused by prune_magnitude's check (ConfigError).
SPARSITIES = "method.sparsity=0.0,0.2,0.4,0.6,0.8,1.5"


def test_joblib_sweep_isolates_the_failed_job_and_resume_reruns_only_it(run_compbench, tmp_path):
    command = (*FAST, "method=prune_magnitude", SPARSITIES, "hydra/launcher=joblib", "hydra.launcher.n_jobs=2", "-m")
    proc, rows = run_compbench(*command)

    assert len(rows) == 6
    assert len({r["run_id"] for r in rows}) == 6 and len({r["config_hash"] for r in rows}) == 6
    ok = [r for r in rows if r["status"] == "ok"]
    failed = [r for r in rows if r["status"] == "failed"]
    assert len(ok) == 5 and len(failed) == 1
    assert failed[0]["error"].startswith("ConfigError: prune_magnitude.sparsity must be in [0, 1)")
    # Two jobs started together needed the same teacher: one fine-tuned it, everyone else reused it.
    assert len({r["teacher_hash"] for r in ok}) == 1
    assert sorted(r["teacher_reused"] for r in ok) == [False, True, True, True, True]
    teachers = Path(tmp_path / "results/cache/teachers")
    assert [p.name for p in teachers.iterdir() if p.is_dir()] == [ok[0]["teacher_hash"]]
    assert "skipped 0 done, ran 6: 5 ok, 1 failed" in proc.stdout + proc.stderr

    proc, rows = run_compbench(*command)
    assert "skipped 5 done, ran 1: 0 ok, 1 failed" in proc.stdout + proc.stderr
    assert len(rows) == 7
    assert rows[-1]["status"] == "failed" and rows[-1]["config_hash"] == failed[0]["config_hash"]


def test_basic_launcher_goes_on_after_a_failed_job(run_compbench):
    proc, rows = run_compbench(*FAST, "method=prune_magnitude", "method.sparsity=1.5,0.5", "-m")
    assert [r["status"] for r in rows] == ["failed", "ok"]
    assert proc.returncode == 0  # a sweep with failed jobs is still a finished sweep


def test_force_recomputes_a_done_config(run_compbench):
    run_compbench(*FAST, "evaluation.calibration.enabled=false")
    proc, rows = run_compbench(*FAST, "evaluation.calibration.enabled=false", "-m")
    assert len(rows) == 1 and "skipped 1 done, ran 0" in proc.stdout + proc.stderr
    _, rows = run_compbench(*FAST, "evaluation.calibration.enabled=false", "force=true", "-m")
    assert len(rows) == 2 and rows[0]["config_hash"] == rows[1]["config_hash"]
    assert [r["teacher_reused"] for r in rows] == [False, True]


def test_submitit_local_runs_a_two_job_sweep(run_compbench, tmp_path):
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher")
    proc, rows = run_compbench(*FAST, "method=prune_magnitude", "method.sparsity=0.3,0.6",
                               "hydra/launcher=submitit_local", "hydra.launcher.timeout_min=10", "-m")
    assert sorted(r["method.sparsity"] for r in rows) == [0.3, 0.6]
    assert all(r["status"] == "ok" for r in rows)
    # Each job ran in its own submitit process, which left its own log.
    assert len(list(Path(tmp_path / "results/hydra").rglob("*_0_log.out"))) == 2


def test_ddp_on_two_cpu_processes_writes_one_row(run_compbench):
    proc, rows = run_compbench(*FAST, "trainer=ddp")
    assert len(rows) == 1 and rows[0]["status"] == "ok", rows
    log = Path(rows[0]["run_dir"], "run.log").read_text()
    assert "MEMBER: 2/2" in log and "distributed_backend=gloo" in proc.stdout + proc.stderr + log
