"""RTN weight-only PTQ: levels per group, error ordering by bits, exact export reloads, validation."""

import copy

import pytest
import torch
from omegaconf import OmegaConf

from compbench.errors import ConfigError
from compbench.methods import build_method
from compbench.methods.export import load_export
from compbench.methods.quantization.ptq_weight_only import WeightOnlyPTQ
from compbench.models.families import FAMILIES
from method_harness import run_steps, tiny_batch, tiny_model

from method_harness import METHOD_CONF as CONF


def _finalize(method, family):
    model = tiny_model(family)
    final, _ = run_steps(method, copy.deepcopy(model), [], family=family)
    return model, final


@pytest.mark.parametrize("bits", [2, 3, 4, 8])
@pytest.mark.parametrize("group_size", [None, 16])
def test_levels_per_channel_or_group(bits, group_size):
    _, final = _finalize(WeightOnlyPTQ(w_bits=bits, group_size=group_size), "decoder")
    weight = final.transformer.h[0].mlp.c_fc.weight.detach()
    groups = weight.reshape(weight.shape[0], -1, group_size or weight.shape[1]).reshape(-1, group_size or weight.shape[1])
    assert max(len(torch.unique(g)) for g in groups) <= 2**bits
    assert type(final.transformer.wte) is torch.nn.Embedding  # e_bits=null keeps embeddings


def test_error_shrinks_with_more_bits():
    batch = tiny_batch("encoder")
    errors = []
    for bits in (2, 4, 8):
        model, final = _finalize(WeightOnlyPTQ(w_bits=bits, e_bits=bits), "encoder")
        with torch.no_grad():
            errors.append(float((final(**batch).logits - model(**batch).logits).abs().mean()))
    assert errors[0] > errors[1] > errors[2]
    assert errors[2] < 0.01


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("group_size", [None, 32])
def test_export_reload_matches(tmp_path, family, group_size):
    method = WeightOnlyPTQ(w_bits=3, e_bits=4, group_size=group_size)
    _, final = _finalize(method, family)
    manifest = method.export(final, tmp_path, None)
    assert manifest["params"]["w_bits"] == 3 and manifest["format"] == "packed"
    batch = tiny_batch(family)
    reloaded = load_export(tmp_path)
    with torch.no_grad():
        torch.testing.assert_close(reloaded(**batch).logits, final(**batch).logits, rtol=0, atol=1e-5)


def test_generate_still_works_after_quantization():
    _, final = _finalize(WeightOnlyPTQ(w_bits=4, e_bits=4), "decoder")
    out = final.generate(tiny_batch("decoder")["input_ids"][:1, :4], max_new_tokens=3, do_sample=False)
    assert out.shape == (1, 7)


@pytest.mark.parametrize("bad", [dict(w_bits=5), dict(w_bits=True), dict(e_bits=1), dict(group_size=0)])
def test_bad_parameters_are_refused(bad):
    with pytest.raises(ConfigError):
        WeightOnlyPTQ(**bad)


def test_yaml_builds():
    cfg = OmegaConf.load(CONF / "ptq_weight_only.yaml")
    method = build_method(cfg)
    assert isinstance(method, WeightOnlyPTQ) and method.eff_mode == "fake-quant"
