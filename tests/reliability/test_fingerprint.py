"""Data fingerprints key the run (config_hash) and the teacher cache; one-stream split derivation."""

from __future__ import annotations

import logging
import os
import shutil

from compbench.records.schema import config_hash
from compbench.tasks.fingerprint import file_digest, sha256_file
from compbench.tasks.lm import CausalLMTask
from compbench.training.teacher import teacher_key

PTB_LINES = [f"the {i} cat sat on mat number {i % 7}" for i in range(100)]


def ptb_folder(path, train=True):
    path.mkdir(parents=True, exist_ok=True)
    if train:
        (path / "ptb.train.txt").write_text("\n".join(PTB_LINES) + "\n")
    (path / "ptb.valid.txt").write_text("\n".join(PTB_LINES[:50]) + "\n")
    (path / "ptb.test.txt").write_text("\n".join(PTB_LINES[50:]) + "\n")
    return path


def task(data_dir, **kw):
    return CausalLMTask(name="ptb", data_dir=str(data_dir), doc_split="none", max_length=16, stride=8, **kw)


def test_file_digest_is_the_sha256_and_is_cached_by_size_and_mtime(tmp_path):
    f = tmp_path / "a.txt"
    f.write_text("hello")
    cache = tmp_path / "cache"
    assert file_digest(f, cache) == sha256_file(f)
    # A cache hit does not read the file: prove it by corrupting the cached digest.
    text = (cache / "file_digests.json").read_text().replace(sha256_file(f), "0" * 64)
    (cache / "file_digests.json").write_text(text)
    assert file_digest(f, cache) == "0" * 64
    f.write_text("hello!")  # new size: hashed again
    assert file_digest(f, cache) == sha256_file(f)
    st = f.stat()
    f.write_text("hellO!")  # same size, new mtime: hashed again
    os.utime(f, ns=(st.st_atime_ns, st.st_mtime_ns + 10_000_000))
    assert file_digest(f, cache) == sha256_file(f)


def test_fingerprint_follows_content_not_location(tmp_path):
    a = ptb_folder(tmp_path / "a")
    fp = task(a).fingerprint(tmp_path / "cache")
    moved = tmp_path / "elsewhere" / "b"
    shutil.copytree(a, moved)
    assert task(moved).fingerprint(tmp_path / "cache") == fp  # same bytes elsewhere: same data
    with open(moved / "ptb.train.txt", "a") as handle:
        handle.write("one more line\n")
    changed = task(moved).fingerprint(tmp_path / "cache")
    assert changed != fp
    cfg = {"task": {"name": "ptb", "data_dir": "data"}, "seed": 0}
    assert config_hash(cfg, data_fingerprint=fp) != config_hash(cfg, data_fingerprint=changed)
    assert teacher_key({"m": 1}, cfg["task"], 0, {}, fp) != teacher_key({"m": 1}, cfg["task"], 0, {}, changed)


def test_one_stream_corpus_without_train_is_split_by_lines_and_logged(tmp_path, caplog):
    data = ptb_folder(tmp_path / "ptb", train=False)
    t = task(data)
    with caplog.at_level(logging.INFO):
        splits = t.load()
    assert len(splits["train"]) == 1 and len(splits["validation"]) == 1  # still one stream each
    train_lines, val_lines = splits["train"][0].split("\n"), splits["validation"][0].split("\n")
    assert train_lines + val_lines == PTB_LINES[:50]
    assert len(train_lines) == 45  # derive_fraction 0.9 of 50 lines
    assert "lines of one stream" in t.provenance["train"]
    assert any("derived train/validation" in r.getMessage() for r in caplog.records)


def test_single_line_stream_is_split_by_words(tmp_path):
    data = tmp_path / "one"
    data.mkdir()
    (data / "valid.txt").write_text(" ".join(f"w{i}" for i in range(20)))
    (data / "test.txt").write_text("a b c")
    splits = task(data).load()
    assert splits["train"][0].split() == [f"w{i}" for i in range(18)]
    assert splits["validation"][0].split() == ["w18", "w19"]


def test_tiny_tokenizer_cache_is_keyed_by_the_text(tmp_path):
    from compbench.models.tokenizer import train_bpe_tokenizer

    a = train_bpe_tokenizer(["alpha beta gamma"] * 10, "decoder", 300, tmp_path)
    b = train_bpe_tokenizer(["alpha beta gamma"] * 10 + ["delta"], "decoder", 300, tmp_path)
    assert a.name_or_path != b.name_or_path
