"""``methods.lifecycle``: ``compress`` runs check → prepare → train → finalize per stage, and
refuses misuse of the lifecycle (a programming error, not bad input) with a ``RuntimeError``."""

from __future__ import annotations

import pytest
import torch
from method_harness import tiny_batch, tiny_model

from compbench.errors import ConfigError
from compbench.methods.base import MethodContext
from compbench.methods.lifecycle import PlainTraining, compress, prepare_stage
from compbench.methods.none import NoCompression
from compbench.methods.quantization.qat import QAT


def context(index, method):
    return MethodContext(family="decoder")


def test_an_empty_chain_is_bad_input():
    with pytest.raises(ConfigError, match="empty"):
        compress(tiny_model("decoder"), [], context)


def test_a_training_stage_without_a_training_loop_is_misuse():
    with pytest.raises(RuntimeError, match="pass a training loop"):
        compress(tiny_model("decoder"), [QAT(w_bits=8, e_bits=8, a_bits=8, distill=False, max_steps=2)], context)


def test_one_method_object_twice_in_a_chain_is_misuse():
    method = NoCompression()
    with pytest.raises(RuntimeError, match="twice"):
        compress(tiny_model("decoder"), [method, method], context)


def test_plain_steps_equal_the_plain_training_loop():
    """Stepping by hand (``PlainTraining.start``) is the loop ``compress`` runs: same losses."""
    batches = [tiny_batch("decoder", seed=s) for s in range(3)]
    losses = []
    for stepwise in (False, True):
        torch.manual_seed(0)
        model, method = tiny_model("decoder", seed=0), QAT(w_bits=8, e_bits=8, a_bits=8, distill=False, max_steps=3)
        loop = PlainTraining(batches, lr=1e-3, schedule=True, warmup_ratio=0.3, clip=1.0)
        if stepwise:
            steps = loop.start(prepare_stage(model, method, MethodContext(family="decoder")), method)
            for _ in range(steps.total):
                steps.step()
        else:
            compress(model, [method], context, loop)
        losses.append(loop.losses)
    assert len(losses[0]) == 3 and losses[0] == losses[1]
