"""Drive a Method's lifecycle on a tiny model without the pipeline (shared by method tests).

It runs the pipeline's own lifecycle (``compbench.methods.lifecycle.compress``) with a plain
training loop instead of the LightningModule, so that method unit tests stay fast; end-to-end
CLI tests cover the real LightningModule.
"""

from __future__ import annotations

from pathlib import Path

import math

import torch
from transformers import (
    BartForConditionalGeneration,
    GPT2ForTokenClassification,
    GPT2LMHeadModel,
    XLMRobertaForTokenClassification,
)

from compbench.methods.base import Method, MethodContext
from compbench.methods.lifecycle import PlainTraining, compress
from compbench.models.tiny import tiny_config

VOCAB = 96
#: conf/method/ of this checkout (method YAMLs that tests load directly).
METHOD_CONF = Path(__file__).resolve().parents[1] / "conf" / "method"


def tiny_model(family: str, seed: int = 0, **overrides):
    """A tiny random model of one family: encoder = XLM-R token classifier (5 labels),
    decoder = GPT-2 LM, encoder_decoder = BART seq2seq."""
    torch.manual_seed(seed)
    if family == "encoder":
        cfg = tiny_config("xlm-roberta", vocab_size=VOCAB, num_labels=5, pad_token_id=1, **overrides)
        return XLMRobertaForTokenClassification(cfg).eval()
    if family == "decoder":
        return GPT2LMHeadModel(tiny_config("gpt2", vocab_size=VOCAB, bos_token_id=0, eos_token_id=2, **overrides)).eval()
    if family == "decoder_tokcls":
        cfg = tiny_config("gpt2", vocab_size=VOCAB, num_labels=5, bos_token_id=0, eos_token_id=2, pad_token_id=1, **overrides)
        return GPT2ForTokenClassification(cfg).eval()
    if family == "encoder_decoder":
        cfg = tiny_config(
            "bart", vocab_size=VOCAB, pad_token_id=1, bos_token_id=0, eos_token_id=2,
            decoder_start_token_id=2, **overrides,
        )
        return BartForConditionalGeneration(cfg).eval()
    raise ValueError(family)


def tiny_batch(family: str, batch_size: int = 4, seq_len: int = 12, seed: int = 0) -> dict[str, torch.Tensor]:
    """A deterministic batch of model inputs with labels for ``tiny_model(family)``."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(3, VOCAB, (batch_size, seq_len), generator=g)
    batch = {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
    if family in ("encoder", "decoder_tokcls"):
        batch["labels"] = torch.randint(0, 5, (batch_size, seq_len), generator=g)
    elif family == "decoder":
        batch["labels"] = ids.clone()
    else:
        batch["labels"] = torch.randint(3, VOCAB, (batch_size, seq_len // 2), generator=g)
    return batch


def run_steps(method: Method, model, batches, teacher=None, lr: float = 1e-3, family: str = "decoder"):
    """The pipeline's lifecycle (:func:`compbench.methods.lifecycle.compress`) with a plain training
    loop over ``batches`` (one step each, no schedule, no weight decay) when the method trains.
    Returns (finalized model, list of losses)."""
    training = PlainTraining(batches, teacher=teacher, lr=lr, steps=len(batches)) if batches else None
    final, _ = compress(model, [method], lambda index, m: MethodContext(family=family, teacher=teacher), training)
    return final, (training.losses if training is not None else [])


def reference_sequence_infonce(q, pos, neg, ids, mask, tau, reduction="mean"):
    """Position by position: negatives = the other distinct tokens of the sequence, each
    represented by ``neg`` at its first occurrence."""
    losses = []
    for b in range(ids.shape[0]):
        first = {}
        for j in range(ids.shape[1]):
            if mask[b, j] and int(ids[b, j]) not in first:
                first[int(ids[b, j])] = j
        for i in range(ids.shape[1]):
            if not mask[b, i]:
                continue
            p = math.exp(float(q[b, i] @ pos[b, i]) / tau)
            n = sum(math.exp(float(q[b, i] @ neg[b, j]) / tau) for t, j in first.items() if t != int(ids[b, i]))
            losses.append(-math.log(p / (p + n)))
    return sum(losses) if reduction == "sum" else sum(losses) / len(losses)
