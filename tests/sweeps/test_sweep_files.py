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
        if (SWEEPS / key.lstrip("+")).is_dir():  # a config group of the study (its arms): composing is the check
            continue
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


STUDY_GROUPS = sorted(p for p in SWEEPS.iterdir() if p.is_dir() and p.name != "wandb")


@pytest.mark.parametrize("group", STUDY_GROUPS, ids=lambda p: p.name)
def test_every_arm_of_a_study_exists_and_composes(group):
    """A study's arms (``+<group>=<arm>``) are files of its group; each composes in-process and
    picks the method its file overrides."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    from compbench.configs import conf_dir
    from compbench.methods import build_methods

    sweep = next(p for p in HYDRA_SWEEPS if f"+{group.name}" in yaml.safe_load(p.read_text())["hydra"]["sweeper"]["params"])
    arms = str(yaml.safe_load(sweep.read_text())["hydra"]["sweeper"]["params"][f"+{group.name}"]).split(",")
    files = {p.stem for p in group.glob("*.yaml")}
    assert set(arms) <= files, f"arms without a file: {sorted(set(arms) - files)}"
    # The sweep file is the primary config; conf/ (its `config` default) joins the search path.
    with initialize_config_dir(config_dir=str(SWEEPS), version_base="1.3"):
        for arm in sorted(files):
            text = (group / f"{arm}.yaml").read_text()
            assert text.startswith("# @package _global_")
            cfg = hydra_compose(config_name=sweep.stem, overrides=[f"hydra.searchpath=[file://{conf_dir()}]",
                                                                    f"+{group.name}={arm}"])
            method = yaml.safe_load(text)["defaults"][0]["override /method"]
            assert cfg.method.name == method, arm
            build_methods(cfg.method)  # its parameters exist and validate (one sentence otherwise)
