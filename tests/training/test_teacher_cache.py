"""The teacher cache: keyed by data, never serves a damaged entry."""

from __future__ import annotations

import json

import torch

from compbench.training.teacher import DONE_FILE, get_or_train_teacher, teacher_key


class Tiny(torch.nn.Linear):
    def __init__(self):
        super().__init__(2, 2)

    def save_pretrained(self, path, safe_serialization=True):
        from safetensors.torch import save_file

        path.mkdir(parents=True, exist_ok=True)
        save_file(self.state_dict(), str(path / "model.safetensors"))


class Tok:
    def save_pretrained(self, path):
        (path / "tokenizer.json").write_text("{}")


def load(path):
    from safetensors.torch import load_file

    model = Tiny()
    model.load_state_dict(load_file(str(path / "model.safetensors")))
    return model


def test_damaged_cached_teacher_is_trained_again(tmp_path):
    trained = []

    def train():
        trained.append(1)
        return Tiny(), {}

    _, path, reused, _ = get_or_train_teacher(tmp_path, "k", train, load, Tok())
    assert not reused and json.loads((path / DONE_FILE).read_text())["key"] == "k"
    weights = path / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:10])  # a disk error after caching
    _, _, reused, _ = get_or_train_teacher(tmp_path, "k", train, load, Tok())
    assert not reused and len(trained) == 2  # retrained, not a crash loop
    _, _, reused, _ = get_or_train_teacher(tmp_path, "k", train, load, Tok())
    assert reused and len(trained) == 2
    assert not list(tmp_path.glob("*.tmp"))


def test_teacher_key_depends_on_the_data_fingerprint():
    base = ({"name": "m"}, {"name": "t", "eval_batch_size": 8}, 0, {"lr": 1e-3})
    assert teacher_key(*base, "aaaa") != teacher_key(*base, "bbbb")
    assert teacher_key(*base, "aaaa") == teacher_key(*base, "aaaa")
