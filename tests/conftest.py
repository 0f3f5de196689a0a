"""Shared test set-up: one torch/OpenMP thread for the tests and every CLI they start (the CI
machine has 2 shared cores; two threads there made runs up to 18x slower). Set here, not in the
shell, so that ``python -m pytest`` and ``.ci/run`` are the same thing."""

import os
import sys
from pathlib import Path

# Before torch is imported: OpenMP reads these once; subprocesses inherit them.
os.environ["OMP_NUM_THREADS"] = "1"
os.environ["MKL_NUM_THREADS"] = "1"

import pytest  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(1)
os.environ.setdefault("WANDB_MODE", "disabled")
sys.path.insert(0, str(Path(__file__).parent))

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.fixture
def shared_data() -> Path:
    """``../shared/data`` beside the checkout; tests that need it skip when it is absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real data not found at {SHARED_DATA} (the team's ../shared/data)")
    return SHARED_DATA


REPO = Path(__file__).resolve().parents[1]


def compbench_cli(output_dir: Path, *overrides: str, check: bool = True, timeout: int = 600):
    """Run the real ``compbench`` CLI in a subprocess; return (process, rows of its store)."""
    import subprocess

    from compbench.records.store import ResultsStore

    env = {**os.environ, "OMP_NUM_THREADS": "1", "WANDB_MODE": "disabled", "HYDRA_FULL_ERROR": "0"}
    cmd = [sys.executable, "-m", "compbench.cli", f"paths.output_dir={output_dir}", "logger=none", *overrides]
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"compbench failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    db = Path(output_dir) / "compbench.db"
    rows = ResultsStore(db).rows() if db.exists() else []
    return proc, rows


@pytest.fixture
def run_compbench(tmp_path):
    """``run_compbench(*overrides)`` runs the CLI with results under this test's tmp dir."""
    return lambda *overrides, **kw: compbench_cli(kw.pop("output_dir", tmp_path / "results"), *overrides, **kw)
