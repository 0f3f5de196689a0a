"""The analysis notebook runs: executed with nbclient against a store the real CLI writes from
another working directory (relative ``paths.output_dir``), so it cannot rot; stored run
directories resolve from anywhere; the notebook is kept in git without outputs."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from compbench.records.store import ResultsStore
from compbench.reporting.runs import load_runs, resolve_run_dir

REPO = Path(__file__).resolve().parents[2]
NOTEBOOK = REPO / "notebooks" / "compare_methods.ipynb"
# Small but complete runs (calibration, robustness, efficiency), without debug=fast: reports
# leave debug runs out by default, and the notebook shows what a researcher sees.
SMALL = ["finetune.max_steps=10", "finetune.val_every_n_steps=5", "task.max_train_samples=64",
         "task.max_eval_samples=32", "evaluation.efficiency.repeats=2", "evaluation.robustness.max_examples=16",
         "trainer.enable_progress_bar=false"]


@pytest.fixture(scope="module")
def cli_store(tmp_path_factory) -> Path:
    """Two runs (method=none and magnitude pruning, one shared teacher) written by the real CLI
    started in a temp folder with a *relative* output dir."""
    work = tmp_path_factory.mktemp("work")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "WANDB_MODE": "disabled", "HYDRA_FULL_ERROR": "0"}
    proc = subprocess.run([sys.executable, "-m", "compbench.cli", "-m", "method=none,prune_magnitude", "logger=none",
                           "paths.output_dir=results", *SMALL], cwd=work, env=env, capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return work / "results" / "compbench.db"


def test_stored_run_dirs_are_absolute(cli_store):
    rows = ResultsStore(cli_store).rows()
    assert [r["status"] for r in rows] == ["ok", "ok"], [r["error"] for r in rows]
    for row in rows:
        assert Path(row["run_dir"]).is_absolute() and (Path(row["run_dir"]) / "calibration.npz").is_file()


def test_relative_run_dirs_of_older_stores_resolve_against_the_store(tmp_path, monkeypatch):
    run_dir = tmp_path / "proj" / "results" / "runs" / "r1"
    run_dir.mkdir(parents=True)
    db = tmp_path / "proj" / "results" / "compbench.db"
    ResultsStore(db).append({"run_id": "r1", "status": "ok", "run_dir": "results/runs/r1"})  # as written from proj/
    monkeypatch.chdir(tmp_path)  # somewhere else entirely
    assert resolve_run_dir("results/runs/r1", db) == run_dir
    assert load_runs(db)["run_dir"].tolist() == [run_dir]
    assert resolve_run_dir(str(run_dir), db) == run_dir and resolve_run_dir(None, db) is None


def test_notebook_is_stored_without_outputs():
    notebook = json.loads(NOTEBOOK.read_text())
    code = [c for c in notebook["cells"] if c["cell_type"] == "code"]
    assert code and all(c["outputs"] == [] and c["execution_count"] is None for c in code)


def test_notebook_executes_against_the_store(cli_store, monkeypatch):
    nbformat = pytest.importorskip("nbformat", reason="the notebook extra is not installed (pip install -e '.[notebook]')")
    nbclient = pytest.importorskip("nbclient", reason="the notebook extra is not installed (pip install -e '.[notebook]')")
    monkeypatch.setenv("COMPBENCH_DB", str(cli_store))
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    # Run from notebooks/, where the old notebook broke on paths relative to the repository root.
    nbclient.NotebookClient(notebook, timeout=600, kernel_name="python3",
                            resources={"metadata": {"path": str(NOTEBOOK.parent)}}).execute()
    outputs = [o for c in notebook.cells if c.cell_type == "code" for o in c.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    text = "\n".join(o.get("text", "") for o in outputs if o.output_type == "stream")
    assert f"2 ok runs in {cli_store}" in text
    markdown = [o["data"]["text/markdown"] for o in outputs if "text/markdown" in o.get("data", {})]
    assert markdown and "| prune_magnitude" in markdown[0] and "Δ quality.f1" in markdown[0]
    assert sum("image/png" in o.get("data", {}) for o in outputs) >= 4  # size, latency, reliability, robustness
    assert "source: Awobade, Oduwole, Kolawole, 2024" in text
