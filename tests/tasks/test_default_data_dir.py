"""``task.default_data_dir``: real data beside the checkout is read when ``task.data_dir`` is unset."""

from __future__ import annotations

from pathlib import Path

from hydra import compose, initialize_config_dir

from compbench.configs import build_dataclass

CONF = Path(__file__).resolve().parents[2] / "conf"


def masakhaner(data_root: Path, *extra: str):
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose("config", overrides=["task=masakhaner", "task.lang=yor", f"paths.data_root={data_root}", *extra])
    return build_dataclass(cfg.task, "task")


def test_existing_folder_under_data_root_becomes_the_data_dir(tmp_path):
    (tmp_path / "masakhaner" / "yor").mkdir(parents=True)
    task = masakhaner(tmp_path)
    assert task.source == "local" and Path(task.data_dir) == tmp_path / "masakhaner" / "yor"


def test_absent_folder_leaves_the_hub_and_explicit_settings_win(tmp_path):
    assert masakhaner(tmp_path).source == "hub"
    (tmp_path / "masakhaner" / "yor").mkdir(parents=True)
    assert masakhaner(tmp_path, "task.source=hub").source == "hub"
    other = tmp_path / "mine"
    assert masakhaner(tmp_path, f"task.data_dir={other}").data_dir == str(other)
