"""What several benchmarks build: model shapes (GPT-2 small, XLM-R base, their quick
reductions), random LM batches, the composed run config, the smoke LM task, a method's export
reloaded through the pipeline's own lifecycle (``methods.lifecycle.compress``), and cumulative
profile times of named functions."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn


def gpt2_config(quick: bool, **overrides):
    """GPT-2 small (12 x 768, vocabulary 50257), or a 2 x 128 reduction with ``quick``."""
    from transformers import GPT2Config

    if quick:
        base = dict(n_layer=2, n_embd=128, n_head=2, vocab_size=5000, n_positions=1024)
    else:
        base = {}  # GPT-2 small: 12 x 768, 12 heads, vocab 50257
    return GPT2Config(**{**base, **overrides})


def xlmr_config(quick: bool):
    """XLM-R base (12 x 768, 12 heads, FFN 3072, vocabulary 250002) with a 9-label NER head
    (MasakhaNER's), or a 2 x 128 reduction with ``quick``."""
    from transformers import XLMRobertaConfig

    size = dict(hidden_size=128, num_hidden_layers=2, num_attention_heads=2, intermediate_size=512,
                vocab_size=5000) if quick else {}
    return XLMRobertaConfig(**{"vocab_size": 250002, "hidden_size": 768, "num_hidden_layers": 12,
                               "num_attention_heads": 12, "intermediate_size": 3072,
                               "max_position_embeddings": 514, "type_vocab_size": 1, "num_labels": 9, **size})


def lm_batches(vocab: int, batch: int, seq_len: int, n: int = 4, seed: int = 0) -> list[dict[str, torch.Tensor]]:
    """``n`` batches of random token ids with LM labels (the ids themselves)."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n):
        ids = torch.randint(0, vocab, (batch, seq_len), generator=g)
        out.append({"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": ids.clone()})
    return out


def compose_config(overrides: list[str]):
    """The run config ``compbench`` would compose with these overrides."""
    from hydra import compose, initialize_config_dir

    from compbench.configs import conf_dir

    with initialize_config_dir(config_dir=str(conf_dir()), version_base="1.3"):
        return compose(config_name="config", overrides=overrides)


def training_settings() -> dict[str, float]:
    """The pipeline's AdamW weight decay and warm-up ratio (``finetune.*`` of the default config),
    so that a plain loop trains as the LightningModule does."""
    ft = compose_config([]).finetune
    return {"weight_decay": float(ft.weight_decay), "warmup_ratio": float(ft.warmup_ratio)}


def lm_task(max_length: int, eval_samples: int, eval_batch: int, cache: Path):
    """The smoke LM task, set up with the tiny GPT-2 spec's trained tokenizer."""
    from compbench.configs import build_dataclass

    cfg = compose_config(["model=tiny_gpt2", "task=smoke_lm", f"task.max_length={max_length}",
                          f"task.stride={max_length // 2}", f"task.max_eval_samples={eval_samples}",
                          f"task.eval_batch_size={eval_batch}"])
    spec = build_dataclass(cfg.model, "model")
    task = build_dataclass(cfg.task, "task")
    task.load()
    tokenizer = spec.build_tokenizer(task, cache)
    task.setup(tokenizer)
    return task, tokenizer


def no_training(model: nn.Module, method: Any, index: int) -> None:
    """A training loop that trains nothing: speed and size do not depend on the weights' values
    (except sparse storage, whose zeros magnitude pruning fixes without training)."""
    return None


def export_reload(method, model: nn.Module, family: str, out: Path, teacher: nn.Module | None = None,
                  train: Callable[..., Any] = no_training):
    """``model`` through ``method``'s lifecycle (``compress``: check, prepare, ``train``, finalize),
    exported and reloaded: (reloaded model, export bytes on disk)."""
    from compbench.methods.base import MethodContext
    from compbench.methods.export import artifact_size_bytes, load_export
    from compbench.methods.lifecycle import compress

    context = MethodContext(family=family, teacher=teacher)
    final, last = compress(model, [method], lambda index, m: context, train)
    method.export(final, out, last)
    return load_export(out), artifact_size_bytes(out)


def cumulative_s(profiler, functions: dict[str, Callable[..., Any]]) -> dict[str, float]:
    """Cumulative seconds of each function (label -> the function object itself, so a renamed
    stage fails here instead of silently reading 0) in a cProfile."""
    import pstats

    stats = pstats.Stats(profiler).stats  # (file, line, name) -> (cc, nc, tottime, cumtime, callers)
    out = {}
    for label, fn in functions.items():
        code = getattr(fn, "__wrapped__", fn).__code__
        key = (code.co_filename, code.co_firstlineno, code.co_name)
        out[label] = stats[key][3] if key in stats else 0.0
    return out
