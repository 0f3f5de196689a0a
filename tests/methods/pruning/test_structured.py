"""prune_structured: heads / FFN neurons / layers really removed, model still runs, export reloads."""

import copy
from types import SimpleNamespace

import pytest
import torch
from method_harness import run_steps, tiny_batch, tiny_model

from compbench.models.families import FAMILIES
from compbench.errors import ConfigError
from compbench.methods import build_method
from compbench.methods.base import MethodContext
from compbench.methods.export import artifact_size_bytes, load_export
from compbench.methods.pruning.structured import (
    StructuredPruning,
    attention_units,
    describe_structure,
    ffn_units,
    keep_heads,
    keep_neurons,
)

# 4 heads, FFN 128 and 4 layers per stack so that halving leaves something to compare
SHAPES = {
    "encoder": dict(num_attention_heads=4, num_hidden_layers=4),
    "decoder": dict(n_head=4, n_layer=4, n_inner=128),
    "encoder_decoder": dict(encoder_attention_heads=4, decoder_attention_heads=4, encoder_layers=4, decoder_layers=4),
}


def _params(model):
    return sum(p.numel() for p in model.parameters())


def _model(family):
    return tiny_model(family, **SHAPES[family])


def _task(family, n=3):
    return SimpleNamespace(train_dataloader=lambda: [tiny_batch(family, seed=i) for i in range(n)])


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("importance", ["magnitude", "gradient"])
def test_heads_and_ffn_removed_and_export_reloads(family, importance, tmp_path):
    model = _model(family)
    dense_params = _params(model)
    model.save_pretrained(tmp_path / "dense")
    method = StructuredPruning(head_sparsity=0.5, ffn_sparsity=0.5, importance=importance)
    ctx = MethodContext(family=family, task=_task(family))
    method.check(ctx)
    model = method.finalize(method.prepare(model, ctx), ctx)
    structure = describe_structure(model)
    assert set(structure["heads"].values()) == {2}
    assert set(structure["ffn"].values()) == {64}
    batch = tiny_batch(family, seed=5)
    with torch.no_grad():
        logits = model(**batch).logits
    assert torch.isfinite(logits).all()
    assert _params(model) < dense_params
    manifest = method.export(model, tmp_path / "pruned", ctx)
    assert manifest["size_bytes"] < artifact_size_bytes(tmp_path / "dense")
    reloaded = load_export(tmp_path / "pruned")
    assert type(reloaded) is type(model) and _params(reloaded) == _params(model)
    with torch.no_grad():
        assert (reloaded(**batch).logits - logits).abs().max() <= 1e-5


def test_magnitude_keeps_the_largest_heads_and_the_kept_heads_compute_the_same():
    model = tiny_model("encoder", num_attention_heads=4)
    attn = model.roberta.encoder.layer[0].attention.self
    with torch.no_grad():  # make head 2 and head 0 the biggest
        for lin in (attn.query, attn.key, attn.value):
            lin.weight[32:48] *= 10
            lin.weight[0:16] *= 5
    expected = torch.cat([attn.query.weight[0:16], attn.query.weight[32:48]]).detach().clone()
    model = StructuredPruning(head_sparsity=0.5, ffn_sparsity=0.0).prepare(model, MethodContext(family="encoder"))
    assert torch.equal(model.roberta.encoder.layer[0].attention.self.query.weight, expected)
    assert describe_structure(model)["heads"]["roberta.encoder.layer.0.attention.self"] == 2


def test_gradient_importance_drops_a_head_whose_output_is_unused():
    model = tiny_model("decoder", n_head=2)
    with torch.no_grad():  # head 0 contributes nothing: its gate gradient is exactly zero
        for block in model.transformer.h:
            block.attn.c_proj.weight[0:32] = 0
    kept_rows = model.transformer.h[0].attn.c_proj.weight[32:64].detach().clone()
    method = StructuredPruning(head_sparsity=0.5, ffn_sparsity=0.0, importance="gradient", importance_batches=2)
    model = method.prepare(model, MethodContext(family="decoder", task=_task("decoder")))
    assert torch.equal(model.transformer.h[0].attn.c_proj.weight, kept_rows)


def test_keeping_all_heads_and_neurons_is_the_identity():
    model = tiny_model("decoder", n_head=4)
    batch = tiny_batch("decoder")
    with torch.no_grad():
        before = model(**batch).logits
        for unit in attention_units(model):
            keep_heads(model, unit, [0, 1, 2, 3])
        for unit in ffn_units(model):
            keep_neurons(model, unit, list(range(256)))
        assert torch.allclose(model(**batch).logits, before, atol=1e-6)


def test_removed_head_equals_zeroed_output_projection():
    # Cutting head 1 must equal zeroing its slice of c_proj's input (what the head contributes).
    model = tiny_model("decoder", n_head=2)
    reference = tiny_model("decoder", n_head=2)
    unit = attention_units(model)[0]
    with torch.no_grad():
        reference.transformer.h[0].attn.c_proj.weight[32:64] = 0
        keep_heads(model, unit, [0])
        batch = tiny_batch("decoder")
        assert torch.allclose(model(**batch).logits, reference(**batch).logits, atol=1e-5)


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("drop,kwargs,expected", [
    ("keep_every_k", {"k": 2}, 2), ("top", {"keep_layers": 1}, 1), ("bottom", {"keep_layers": 3}, 3),
])
def test_layer_dropping_updates_config_and_still_runs(family, drop, kwargs, expected, tmp_path):
    model = _model(family)
    dense_params = _params(model)
    method = StructuredPruning(head_sparsity=0.0, ffn_sparsity=0.0, drop_layers=drop, **kwargs)
    ctx = MethodContext(family=family)
    model = method.finalize(method.prepare(model, ctx), ctx)
    counts = {
        "encoder": lambda m: [m.config.num_hidden_layers, len(m.roberta.encoder.layer)],
        "decoder": lambda m: [m.config.n_layer, len(m.transformer.h)],
        "encoder_decoder": lambda m: [m.config.encoder_layers, len(m.model.encoder.layers),
                                      m.config.decoder_layers, len(m.model.decoder.layers)],
    }[family](model)
    assert counts == [expected] * len(counts)
    assert _params(model) < dense_params
    batch = tiny_batch(family)
    with torch.no_grad():
        logits = model(**batch).logits
    method.export(model, tmp_path, ctx)
    reloaded = load_export(tmp_path)
    with torch.no_grad():
        assert (reloaded(**batch).logits - logits).abs().max() <= 1e-5


def test_bottom_drop_keeps_the_last_layers_weights():
    model = _model("decoder")
    last = model.transformer.h[3].mlp.c_fc.weight.detach().clone()
    model = StructuredPruning(head_sparsity=0.0, ffn_sparsity=0.0, drop_layers="bottom",
                              keep_layers=1).prepare(model, MethodContext(family="decoder"))
    assert torch.equal(model.transformer.h[0].mlp.c_fc.weight, last)
    assert model.transformer.h[0].attn.layer_idx == 0


@pytest.mark.parametrize("family", ["decoder", "encoder_decoder"])
def test_pruned_generative_models_still_generate(family):
    model = _model(family)
    method = StructuredPruning(head_sparsity=0.5, ffn_sparsity=0.25, drop_layers="keep_every_k", k=2)
    model = method.prepare(model, MethodContext(family=family))
    ids = tiny_batch(family, batch_size=2, seq_len=6)["input_ids"]
    out = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=5, do_sample=False,
                         min_new_tokens=5)
    assert out.shape[0] == 2 and out.shape[1] >= 5


def test_recovery_finetuning_trains_the_smaller_model():
    method = StructuredPruning(head_sparsity=0.5, ffn_sparsity=0.5, max_steps=4, lr=1e-2)
    batch = tiny_batch("encoder")
    model, losses = run_steps(method, _model("encoder"), [batch] * 4, family="encoder")
    assert losses[-1] < losses[0]
    assert method.training_steps == 4 and method.learning_rate == 1e-2


def test_gradient_importance_without_task_data_is_refused():
    method = StructuredPruning(head_sparsity=0.5, importance="gradient")
    with pytest.raises(ConfigError, match="needs a task with training data"):
        method.check(MethodContext(family="encoder"))


@pytest.mark.parametrize("params", [
    {"head_sparsity": 1.0}, {"ffn_sparsity": -0.2}, {"head_sparsity": 0.5, "importance": "taylor"},
    {"drop_layers": "middle"}, {"drop_layers": "top"}, {"drop_layers": "keep_every_k", "k": 1},
    {"head_sparsity": 0.0, "ffn_sparsity": 0.0},  # nothing to remove
    {"head_sparsity": 0.5, "max_steps": -1},
])
def test_invalid_parameters_refused_with_one_sentence(params):
    with pytest.raises(ConfigError) as err:
        StructuredPruning(**params)
    assert str(err.value).endswith(".") and str(err.value).count(". ") == 0


def test_keep_layers_beyond_depth_is_refused():
    with pytest.raises(ConfigError, match="exceeds"):
        StructuredPruning(head_sparsity=0.0, ffn_sparsity=0.0, drop_layers="top",
                          keep_layers=9).prepare(_model("encoder"), MethodContext(family="encoder"))


def test_yaml_builds():
    from omegaconf import OmegaConf

    method = build_method(OmegaConf.load("conf/method/prune_structured.yaml"))
    assert isinstance(method, StructuredPruning) and method.row_params()["head_sparsity"] == 0.5


def _per_head_scores(model, batches, per_dimension_abs):
    """Reference in plain torch: capture the input z of each layer's c_proj and its gradient;
    Michel et al.: |sum over positions and the head's dims of z * dL/dz| per example, averaged;
    the earlier (wrong) reading: |.| per dimension and per batch, then summed."""
    captured = []
    hooks = [block.attn.c_proj.register_forward_pre_hook(lambda m, a: captured.append(a[0]) or None)
             for block in model.transformer.h]
    n_head = model.config.n_head
    scores = torch.zeros(len(model.transformer.h), n_head)
    examples = [b for batch in batches for b in ([{k: v[i:i + 1] for k, v in batch.items()}
                                                  for i in range(batch["input_ids"].shape[0])]
                                                 if not per_dimension_abs else [batch])]
    for example in examples:
        captured.clear()
        out = model(**example)
        for z in captured:
            z.retain_grad()
        out.loss.backward()
        for layer, z in enumerate(captured):
            contribution = (z * z.grad).detach()  # [B, T, H * dh]
            per_dim = contribution.reshape(*contribution.shape[:2], n_head, -1)
            if per_dimension_abs:
                scores[layer] += per_dim.sum((0, 1)).abs().sum(-1)
            else:
                scores[layer] += per_dim.sum((0, 1, 3)).abs()
        model.zero_grad()
    for h in hooks:
        h.remove()
    return scores / (1 if per_dimension_abs else len(examples))


def test_gradient_importance_is_michel_et_al_and_differs_from_per_dimension_abs():
    model = tiny_model("decoder", n_head=2, n_layer=1)
    block = model.transformer.h[0]
    dh = block.attn.head_dim
    with torch.no_grad():
        # Head 0: value dims in pairs (d, d + dh/2) are equal and their output columns opposite,
        # so the head's output cancels exactly (Michel score 0), while each dimension on its own
        # has a large gate gradient. Head 1 is left as it is.
        v = block.attn.c_attn.weight[:, 2 * model.config.n_embd: 2 * model.config.n_embd + dh]
        v[:, dh // 2:] = v[:, : dh // 2]
        v.mul_(10)
        w_o = block.attn.c_proj.weight  # Conv1D: (in, out), rows are the head dims
        w_o[dh // 2: dh] = -w_o[: dh // 2]
    batches = [tiny_batch("decoder", seed=i) for i in range(2)]
    reference = copy.deepcopy(model)
    michel = _per_head_scores(reference, batches, per_dimension_abs=False)[0]
    per_dim = _per_head_scores(copy.deepcopy(model), batches, per_dimension_abs=True)[0]
    assert michel.argmax() == 1 and per_dim.argmax() == 0  # the two readings rank the heads differently

    from compbench.methods.pruning.structured import _gradient_scores

    heads, _ = _gradient_scores(model, attention_units(model), ffn_units(model), batches)
    torch.testing.assert_close(heads[0], michel, rtol=1e-4, atol=1e-7)
    kept = block.attn.c_proj.weight[dh:].detach().clone()
    method = StructuredPruning(head_sparsity=0.5, ffn_sparsity=0.0, importance="gradient", importance_batches=2)
    pruned = method.prepare(model, MethodContext(family="decoder", task=SimpleNamespace(train_dataloader=lambda: batches)))
    assert torch.equal(pruned.transformer.h[0].attn.c_proj.weight, kept)  # head 1 kept, head 0 removed
