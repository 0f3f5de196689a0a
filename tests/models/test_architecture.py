"""``models/architecture.py``: the facts each family's entry states match the real transformers
modules (every path resolves, counts agree with the config), and the search for other types
finds what the table states for known ones."""

from __future__ import annotations

import pytest
import torch
from method_harness import tiny_model
from torch import nn
from transformers.pytorch_utils import Conv1D

from compbench.errors import ConfigError
from compbench.models import architecture as arch

FAMILIES = ["encoder", "decoder", "encoder_decoder"]


@pytest.mark.parametrize("family", FAMILIES)
def test_every_path_resolves_and_counts_match_the_config(family):
    model = tiny_model(family)
    stacks = arch.layer_stacks(model)
    assert [s.name for s in stacks] == (["encoder", "decoder"] if family == "encoder_decoder" else ["layers"])
    for stack in stacks:
        blocks = model.get_submodule(stack.module_path)
        assert isinstance(blocks, nn.ModuleList) and len(blocks) == getattr(model.config, stack.layers_attr)
        assert isinstance(getattr(model.config, stack.heads_attr), int)
    layers = sum(len(model.get_submodule(s.module_path)) for s in stacks)
    units = arch.attention_units(model)
    # BART decoder layers have self and cross attention.
    expected = layers + (len(model.get_submodule(stacks[-1].module_path)) if family == "encoder_decoder" else 0)
    assert len(units) == expected and len(arch.ffn_units(model)) == layers
    for unit in units:
        for path in (unit.path, unit.q, unit.k, unit.v, unit.o):
            model.get_submodule(path)
    for unit in arch.ffn_units(model):
        up, down = model.get_submodule(unit.up), model.get_submodule(unit.down)
        assert isinstance(up, (nn.Linear, Conv1D)) and isinstance(down, (nn.Linear, Conv1D))


@pytest.mark.parametrize("family", FAMILIES)
def test_the_search_finds_the_tables_stacks(family):
    model = tiny_model(family)
    table = arch.layer_stacks(model)
    model.config.model_type = "unknown-type"  # force the search path
    found = arch.find_stacks(model)
    assert [(s.name, s.module_path, s.output_prefix, s.mask_side) for s in found] == \
        [(s.name, s.module_path, s.output_prefix, s.mask_side) for s in table]


def test_an_unknown_type_is_refused_naming_the_caller_and_the_known_types():
    model = tiny_model("decoder")
    model.config.model_type = "unknown-type"
    with pytest.raises(ConfigError, match="prune_structured does not know the 'unknown-type' architecture; use one of"):
        arch.attention_units(model, "prune_structured")


def test_conv1d_to_linear_is_exact_and_tables_and_embeddings_are_named():
    model = tiny_model("decoder")
    ids = torch.randint(3, 50, (2, 7), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        before = model(input_ids=ids).logits
        after = arch.conv1d_to_linear(model)(input_ids=ids).logits
    assert not any(isinstance(m, Conv1D) for m in model.modules())
    torch.testing.assert_close(after, before, rtol=0, atol=1e-6)
    assert arch.is_position_table("transformer.wpe") and not arch.is_position_table("transformer.wte")
    assert arch.word_embedding_weight_ids(model) == {id(model.transformer.wte.weight)}
