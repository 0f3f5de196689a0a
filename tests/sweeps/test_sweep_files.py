"""Every study in sweeps/ composes with the real configs and opens with its exact command."""

import subprocess
import sys

import pytest
import yaml
from conftest import REPO

from compbench.sweeps import count_outcomes, summary_line, write_outcome

SWEEPS = REPO / "sweeps"
HYDRA_SWEEPS = sorted(SWEEPS.glob("*.yaml"))
WANDB_SWEEPS = sorted((SWEEPS / "wandb").glob("*.yaml"))


def compose(name: str, *overrides: str) -> dict:
    """The job config of sweep file ``name`` (``compbench --cfg job``), as a dict."""
    cmd = [sys.executable, "-m", "compbench.cli", "--config-dir", str(SWEEPS), "--config-name", name, *overrides,
           "--cfg", "job", "--resolve"]
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return yaml.safe_load(proc.stdout)


def test_there_are_studies():
    assert len(HYDRA_SWEEPS) >= 3 and len(WANDB_SWEEPS) >= 1


@pytest.mark.parametrize("path", HYDRA_SWEEPS, ids=lambda p: p.stem)
def test_hydra_sweep_file_composes_with_its_first_grid_point(path):
    assert path.read_text().startswith(f"# compbench -m --config-dir sweeps --config-name {path.stem}")
    params = yaml.safe_load(path.read_text())["hydra"]["sweeper"]["params"]
    first = [f"{key}={str(values).split(',')[0]}" for key, values in params.items()]
    cfg = compose(path.stem, *first)
    for override in first:
        key, value = override.split("=")
        node = cfg
        for part in key.split("."):
            node = node[part]
        assert str(node) == value


@pytest.mark.parametrize("path", WANDB_SWEEPS, ids=lambda p: p.stem)
def test_wandb_sweep_drives_the_same_entry_point(path):
    spec = yaml.safe_load(path.read_text())
    assert spec["program"] == "compbench" and "${args_no_hyphens}" in spec["command"]
    assert path.read_text().startswith(f"# wandb sweep --project compbench sweeps/wandb/{path.name}")
    name = next(a.split("=", 1)[1] for a in spec["command"] if a.startswith("--config-name="))
    overrides = [f"{key}={(p['values'][0] if 'values' in p else p['min'])}" for key, p in spec["parameters"].items()]
    cfg = compose(name, *overrides, "logger=wandb")
    assert cfg["logger"]["wandb"]["project"] == "compbench"


def test_outcome_markers_are_counted(tmp_path):
    for num, outcome in enumerate(["ok", "skipped", "skipped", "failed"]):
        write_outcome(tmp_path / str(num), outcome)
    assert summary_line(count_outcomes(tmp_path)) == "skipped 2 done, ran 2: 1 ok, 1 failed"
