"""``tasks/readers.py``: CoNLL and WikiText readers, split files."""

from __future__ import annotations

import pytest

from compbench.tasks.readers import find_split_file, read_conll, split_documents


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
