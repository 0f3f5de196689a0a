"""The row contract: column order, config hash, method parameter flattening, validation."""

import math
import re

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

from compbench.errors import ConfigError
from compbench.records import schema
from compbench.records.schema import (
    CONFIG_COLUMNS,
    CONFIG_HASH_IGNORE,
    IDENTITY_COLUMNS,
    METRIC_PREFIXES,
    RowError,
    config_hash,
    error_summary,
    flatten_method_params,
    method_label,
    order_columns,
    utc_timestamp,
    validate_row,
)

CFG = {
    "model": {"name": "gpt2", "family": "decoder"},
    "task": {"name": "wikitext2", "max_length": 128},
    "method": {"_target_": "compbench.methods.distillation.kd.KD", "alpha": 0.5, "temperature": 2.0},
    "seed": 1,
    "trainer": {"max_steps": 100, "enable_progress_bar": True},
    "paths": {"output_dir": "/tmp/a"},
    "sweep_id": "s1",
}


def test_contract_names():
    assert IDENTITY_COLUMNS[:4] == ("run_id", "config_hash", "sweep_id", "status")
    assert {"git_sha", "hardware", "teacher_reused", "started_at", "duration_s"} <= set(IDENTITY_COLUMNS)
    assert CONFIG_COLUMNS == ("model", "task", "lang", "method", "seed")
    assert METRIC_PREFIXES == ("quality.", "calib.", "robust.", "eff.")


def test_order_columns_groups_then_sorted():
    shuffled = ["eff.size_mb", "quality.f1", "robust.typo.f1", "method.w_bits", "calib.ece",
                "seed", "quality.acc", "run_id", "method.alpha", "model", "status", "zz_other"]
    assert order_columns(shuffled) == [
        "run_id", "status", "model", "seed", "method.alpha", "method.w_bits",
        "quality.acc", "quality.f1", "calib.ece", "robust.typo.f1", "eff.size_mb", "zz_other",
    ]


def test_config_hash_is_canonical_and_ignores_display_keys():
    h = config_hash(CFG)
    assert re.fullmatch(r"[0-9a-f]{16}", h)
    reordered = dict(reversed(list(CFG.items())))
    assert config_hash(reordered) == h
    moved = {**CFG, "paths": {"output_dir": "/elsewhere"}, "sweep_id": "s2",
             "trainer": {"max_steps": 100, "enable_progress_bar": False}, "logger": {"wandb": {}}}
    assert config_hash(moved) == h
    assert config_hash({**CFG, "seed": 2}) != h
    assert config_hash({**CFG, "trainer": {"max_steps": 101, "enable_progress_bar": True}}) != h
    # Not ignoring anything makes the display keys count.
    assert config_hash(moved, ignore=()) != config_hash(CFG, ignore=())
    assert "paths" in CONFIG_HASH_IGNORE and "trainer.enable_progress_bar" in CONFIG_HASH_IGNORE


def test_config_hash_resolves_omegaconf_and_does_not_mutate():
    cfg = OmegaConf.create({**CFG, "lr": 1e-4, "lr_copy": "${lr}"})
    plain = OmegaConf.to_container(cfg, resolve=True)
    assert config_hash(cfg) == config_hash(plain)
    before = repr(plain)
    config_hash(plain)
    assert repr(plain) == before
    with pytest.raises(ConfigError, match="cannot hash"):
        config_hash({"x": object()})


def test_flatten_one_stage_and_chain():
    assert flatten_method_params([("kd", {"alpha": 0.5, "layers": [1, 2], "sched": {"start": 0}})]) == {
        "method.alpha": 0.5, "method.layers": "1,2", "method.sched.start": 0,
    }
    stages = [("prune", {"sparsity": 0.5}), ("quant", {"w_bits": 4, "a_bits": None})]
    assert flatten_method_params(stages) == {
        "method.prune.sparsity": 0.5, "method.quant.w_bits": 4, "method.quant.a_bits": None,
    }
    assert method_label(stages) == "prune+quant"
    with pytest.raises(ConfigError, match="unique"):
        flatten_method_params([("prune", {}), ("prune", {})])


GOOD = {"run_id": "r1", "status": "ok", "error": "", "seed": 0, "method.w_bits": 4,
        "quality.f1": 0.9, "eff.size_mb": np.float32(1.5), "teacher_reused": True, "lang": ""}


def test_validate_row_accepts_contract_rows():
    validate_row(GOOD)
    validate_row({**GOOD, "status": "failed", "error": "RuntimeError: out of memory", "quality.f1": math.nan})


@pytest.mark.parametrize(
    ("bad", "match"),
    [
        ({"foo": 1}, "unknown row column"),
        ({"quality.": 1.0}, "unknown row column"),
        ({"quality.f1": [0.9]}, "non-scalar"),
        ({"quality.f1": torch.tensor(0.9)}, "non-scalar"),
        ({"method.cfg": {"a": 1}}, "non-scalar"),
        ({"status": "done"}, "status must be one of"),
        ({"error": "line one\nline two"}, "one line"),
        ({"run_id": ""}, "run_id"),
    ],
)
def test_validate_row_refuses(bad, match):
    with pytest.raises(RowError, match=match):
        validate_row({**GOOD, **bad})


def test_error_summary_and_timestamp_fit_the_row():
    try:
        raise RuntimeError("CUDA out of memory.\nTried to allocate 2 GiB")
    except RuntimeError as exc:
        summary = error_summary(exc)
    assert summary == "RuntimeError: CUDA out of memory."
    assert error_summary(KeyboardInterrupt()) == "KeyboardInterrupt"
    assert len(error_summary(ValueError("x" * 10_000))) == schema.ERROR_MAX_CHARS
    stamp = utc_timestamp()
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\+00:00", stamp)
    validate_row({**GOOD, "status": "failed", "error": summary, "started_at": stamp})
