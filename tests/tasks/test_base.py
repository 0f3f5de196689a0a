"""``tasks/base.py``: split derivation, missing splits refused before loading, the hub code path."""

from __future__ import annotations

import json

import pytest

from compbench.errors import ConfigError
from compbench.tasks.lm import CausalLMTask
from compbench.tasks.ner import TokenClassificationTask
from compbench.tasks.summarization import SummarizationTask


def test_missing_train_split_is_derived_from_validation_and_said(tmp_path):
    docs = [f" = Doc {i} = \n words of document {i} .\n" for i in range(10)]
    (tmp_path / "valid.txt").write_text("".join(docs))
    (tmp_path / "test.txt").write_text(docs[0])
    task = CausalLMTask(name="lm", data_dir=str(tmp_path), derive_fraction=0.8)
    splits = task.load()
    assert len(splits["train"]) == 8 and len(splits["validation"]) == 2 and len(splits["test"]) == 1
    assert task.provenance["train"].startswith("derived: first 80% of") and "no train file" in task.provenance["train"]
    assert task.provenance["validation"].startswith("derived: last 20% of")


def test_missing_test_split_is_refused_before_loading(tmp_path):
    (tmp_path / "train.txt").write_text("a B-PER\n")
    task = TokenClassificationTask(name="ner", data_dir=str(tmp_path))
    with pytest.raises(ConfigError, match="has no test split"):
        task.check_data()


def test_hub_code_path_reads_a_local_dataset_folder(tmp_path):
    """``source=hub`` goes through ``datasets.load_dataset``; offline we give it a local folder."""
    for split in ("train", "validation", "test"):
        rows = [{"document": f"doc {split} {i}", "summary": f"sum {i}"} for i in range(3)]
        (tmp_path / f"{split}.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    task = SummarizationTask(name="xsum_local", source="hub", hub_dataset=str(tmp_path))
    splits = task.load()
    assert splits["test"][1] == ("doc test 1", "sum 1")
    assert task.provenance["train"].startswith("hub ")
