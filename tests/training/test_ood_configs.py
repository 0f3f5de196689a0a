"""Out-of-distribution test sets: overrides merged before interpolation, so ``{lang: yor}``
reads Yoruba's data (merging after resolution silently re-evaluated the training language)."""

from __future__ import annotations

from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

from compbench.configs import conf_dir
from compbench.configs import build_dataclass, ood_task_configs
from compbench.errors import ConfigError
from compbench.training.plan import build_ood_tasks, data_fingerprints


def write_conll(folder: Path, word: str) -> None:
    """A tiny MasakhaNER-style language folder whose every token is ``word``."""
    folder.mkdir(parents=True)
    for split in ("train", "dev", "test"):
        (folder / f"{split}.txt").write_text(f"{word} B-PER\n{word}2 O\n\n{word}3 B-LOC\n")


def compose_cfg(root: Path, *overrides: str):
    with initialize_config_dir(config_dir=str(conf_dir()), version_base="1.3"):
        return compose(config_name="config", overrides=[
            "task=masakhaner", "task.lang=hau", f"paths.data_root={root}", f"paths.output_dir={root / 'out'}",
            *overrides])


@pytest.fixture
def data_root(tmp_path) -> Path:
    write_conll(tmp_path / "masakhaner" / "hau", "Musa")
    write_conll(tmp_path / "masakhaner" / "yor", "Ade")
    return tmp_path


def test_an_ood_lang_override_reads_that_languages_data(data_root):
    cfg = compose_cfg(data_root, "+evaluation.ood.yor={lang: yor}")
    yor = ood_task_configs(cfg)["yor"]
    assert yor["lang"] == "yor" and yor["hub_config"] == "yor"
    assert Path(yor["default_data_dir"]) == data_root / "masakhaner" / "yor"
    task = build_dataclass(yor, "task")
    task.load()
    assert task.splits["test"][0][0][0] == "Ade"  # Yoruba's sentences, not the training language's


def test_the_runs_data_fingerprint_follows_the_ood_sets_files(data_root, tmp_path):
    cfg = compose_cfg(data_root, "+evaluation.ood.yor={lang: yor}")
    task = build_dataclass(cfg.task, "task")
    teacher_fp, before = data_fingerprints(task, build_ood_tasks(cfg), tmp_path / "cache")
    assert before != teacher_fp
    (data_root / "masakhaner" / "yor" / "test.txt").write_text("Bola B-PER\n")
    teacher_after, after = data_fingerprints(task, build_ood_tasks(cfg), tmp_path / "cache")
    assert teacher_after == teacher_fp and after != before  # an edit of the OOD set's file is a new run


def test_an_ood_set_with_its_own_data_dir_and_none_at_all(data_root):
    other = data_root / "elsewhere"
    write_conll(other, "Ngozi")
    cfg = compose_cfg(data_root, f"+evaluation.ood.ibo={{lang: ibo, data_dir: {other}}}")
    assert ood_task_configs(cfg)["ibo"]["data_dir"] == str(other)
    assert ood_task_configs(compose_cfg(data_root)) == {}


def test_an_explicit_data_dir_with_an_ood_lang_and_no_data_dir_is_refused(data_root):
    hau = data_root / "masakhaner" / "hau"
    cfg = compose_cfg(data_root, f"task.data_dir={hau}", "+evaluation.ood.yor={lang: yor}")
    with pytest.raises(ConfigError, match=r"evaluation\.ood\.yor\.data_dir"):
        ood_task_configs(cfg)
    task = build_dataclass(cfg.task, "task")
    with pytest.raises(ConfigError, match="evaluation.ood.yor"):
        data_fingerprints(task, build_ood_tasks(cfg), data_root / "cache")


@pytest.mark.slow
def test_a_run_evaluates_the_ood_language_it_names(data_root, run_compbench):
    """Through the CLI: ``{lang: yor}`` without a data_dir evaluates Yoruba's test file."""
    _, rows = run_compbench("task=masakhaner", "task.lang=hau", f"paths.data_root={data_root}", "debug=fast",
                            "+evaluation.ood.yor={lang: yor}", "evaluation.robustness.enabled=false",
                            "evaluation.efficiency.enabled=false", "evaluation.calibration.enabled=false")
    row = rows[0]
    assert row["status"] == "ok" and "robust.ood.yor.f1" in row and "robust.ood.mean_f1" in row
    log = (Path(row["run_dir"]) / "run.log").read_text()
    assert f"from {data_root / 'masakhaner' / 'yor' / 'test.txt'}" in log
