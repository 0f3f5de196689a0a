"""Local readers, split derivation, the hub code path and the smoke data."""

from __future__ import annotations

import json

import pytest

from compbench.errors import ConfigError
from compbench.tasks import synthetic
from compbench.tasks.lm import CausalLMTask
from compbench.tasks.ner import TokenClassificationTask
from compbench.tasks.readers import find_split_file, read_conll, split_documents
from compbench.tasks.summarization import SummarizationTask


def test_read_conll_skips_docstart_and_keeps_last_column(tmp_path):
    path = tmp_path / "train.txt"
    path.write_text("-DOCSTART- -X- O\n\nEU NNP B-ORG\nrejects VBZ O\n\nPeter B-PER\n")
    assert read_conll(path) == [(["EU", "rejects"], ["B-ORG", "O"]), (["Peter"], ["B-PER"])]


def test_read_conll_reports_a_malformed_line(tmp_path):
    path = tmp_path / "train.txt"
    path.write_text("EU B-ORG\nbroken\n")
    with pytest.raises(ValueError, match="train.txt:2"):
        read_conll(path)


def test_wikitext_documents_start_at_top_level_headings():
    text = " = A = \n text a \n = = Sub = = \n more a \n = B = \n text b \n"
    assert split_documents(text, "wikitext") == ["= A =\ntext a\n= = Sub = =\nmore a", "= B =\ntext b"]
    assert split_documents("x\n\ny\n", "lines") == ["x", "y"]
    assert split_documents("x\ny\n\nz", "blank_lines") == ["x\ny", "z"]
    with pytest.raises(ValueError, match="unknown document split policy"):
        split_documents("x", "paragraphs")


def test_prefixed_split_files_are_found(tmp_path):
    (tmp_path / "ptb.valid.txt").write_text("a")
    (tmp_path / "ptb.test.txt").write_text("b")
    assert find_split_file(tmp_path, "validation", (".txt",)).name == "ptb.valid.txt"
    assert find_split_file(tmp_path, "train", (".txt",)) is None


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


def test_smoke_data_is_deterministic_and_has_unseen_test_names():
    assert synthetic.ner_sentences(50, seed=0) == synthetic.ner_sentences(50, seed=0)
    assert synthetic.ner_sentences(50, seed=0) != synthetic.ner_sentences(50, seed=1)
    train_names = {t for tokens, tags in synthetic.ner_sentences(2000, 0) for t, g in zip(tokens, tags) if g != "O"}
    test_names = {t for tokens, tags in synthetic.ner_sentences(200, 2, unseen_rate=0.3)
                  for t, g in zip(tokens, tags) if g != "O"}
    assert test_names - train_names, "validation/test must contain names never seen in training"
    for tokens, tags in synthetic.ner_sentences(100, 3):
        assert len(tokens) == len(tags)
        for prev, tag in zip(["O"] + tags, tags):
            assert not tag.startswith("I-") or prev[2:] == tag[2:], "I- must continue an entity"
