"""The teacher cache: keyed by what shapes the weights, shared by concurrent jobs, never serves a damaged or
half-written entry."""

from __future__ import annotations

import json
import threading
import time

import pytest
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


def test_teacher_key_follows_what_shapes_the_weights_and_ignores_evaluation_settings():
    from compbench.training.teacher import EVAL_ONLY_TASK_FIELDS

    model, task, finetune = {"name": "m", "tiny": {"n_layer": 2}}, {"name": "t", "max_length": 64}, {"lr": 1e-3}
    key = teacher_key(model, task, 0, finetune, "data")
    # Evaluation-only task settings and dict order do not change the teacher.
    for field in EVAL_ONLY_TASK_FIELDS:
        assert teacher_key(model, {**task, field: 7}, 0, finetune, "data") == key, field
    assert teacher_key(dict(reversed(model.items())), task, 0, finetune, "data") == key
    # Everything that changes the fine-tuned weights does.
    changed = [
        ({"name": "m", "tiny": {"n_layer": 3}}, task, 0, finetune),
        (model, {**task, "max_length": 65}, 0, finetune),
        (model, {**task, "batch_size": 8}, 0, finetune),
        (model, task, 1, finetune),
        (model, task, 0, {"lr": 2e-3}),
    ]
    keys = {teacher_key(*args, "data") for args in changed}
    assert key not in keys and len(keys) == len(changed)


def test_a_reused_teacher_is_the_cached_one_in_a_complete_folder(tmp_path):
    trained = []

    def train():
        trained.append(1)
        torch.manual_seed(len(trained))
        return Tiny(), {"max_steps": 3}

    first, path, reused, info = get_or_train_teacher(tmp_path, "k", train, load, Tok())
    again, path2, reused2, info2 = get_or_train_teacher(tmp_path, "k", train, load, Tok())
    assert (reused, reused2) == (False, True) and len(trained) == 1 and path2 == path
    torch.testing.assert_close(again.state_dict(), first.state_dict(), rtol=0, atol=0)
    assert info2 == info and {"key", "train_time_s", "created_at", "max_steps"} <= set(info)
    assert (path / "tokenizer.json").exists()  # the folder loads as a model with its tokenizer


def test_jobs_needing_the_same_teacher_at_once_fine_tune_it_once(tmp_path):
    trained = []

    def train():
        trained.append(1)
        time.sleep(0.5)  # long enough for the other job to arrive while this one trains
        return Tiny(), {}

    results = []
    jobs = [threading.Thread(target=lambda: results.append(get_or_train_teacher(tmp_path, "k", train, load, Tok())))
            for _ in range(2)]
    for job in jobs:
        job.start()
    for job in jobs:
        job.join(timeout=60)
    assert len(trained) == 1
    assert sorted(r[2] for r in results) == [False, True]  # one trained it, the other waited and reused it


def test_a_teacher_write_killed_midway_is_never_served(tmp_path):
    class Breaks(Tiny):
        def save_pretrained(self, path, safe_serialization=True):
            super().save_pretrained(path)
            raise OSError("killed while writing")

    with pytest.raises(OSError, match="killed while writing"):
        get_or_train_teacher(tmp_path, "k", lambda: (Breaks(), {}), load, Tok())
    assert not (tmp_path / "k").exists()  # only the temporary folder was written
    _, path, reused, _ = get_or_train_teacher(tmp_path, "k", lambda: (Tiny(), {}), load, Tok())
    assert not reused and (path / DONE_FILE).exists() and not list(tmp_path.glob("*.tmp"))
