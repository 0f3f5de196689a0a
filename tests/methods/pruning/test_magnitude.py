"""prune_magnitude: exact sparsity on targets, exclusions, cubic schedule, export round trip."""

import pytest
import torch
from method_harness import run_steps, tiny_batch, tiny_model

from compbench.errors import ConfigError
from compbench.methods import build_method
from compbench.methods.base import MethodContext
from compbench.methods.export import artifact_size_bytes, load_export
from compbench.methods.pruning.magnitude import MagnitudePruning, cubic_sparsity, prunable_targets, weight_sparsity
from compbench.models.families import FAMILIES



def _snapshot(model):
    return {n: p.detach().clone() for n, p in model.named_parameters()}


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("scope", ["global", "per_layer"])
def test_oneshot_reaches_exact_sparsity_and_leaves_excluded_tensors(family, scope):
    model = tiny_model(family)
    before = _snapshot(model)
    method = MagnitudePruning(sparsity=0.8, scope=scope)
    ctx = MethodContext(family=family)
    method.check(ctx)
    model = method.finalize(method.prepare(model, ctx), ctx)
    targets = method.target_modules()
    total = sum(m.weight.numel() for m in targets)
    if scope == "global":
        assert sum(int((m.weight == 0).sum()) for m in targets) == round(0.8 * total)
    else:  # each tensor rounds on its own
        for m in targets:
            assert int((m.weight == 0).sum()) == round(0.8 * m.weight.numel())
    target_ids = {id(m.weight) for m in targets}
    for name, param in model.named_parameters():
        assert not name.endswith("_orig")
        if id(param) not in target_ids:  # embeddings, LayerNorms, biases, heads untouched
            assert torch.equal(param, before[name]), name
    # the largest-magnitude weights survive
    for m in targets:
        name = next(n for n, p in model.named_parameters() if p is m.weight)
        kept = before[name].abs()[m.weight != 0]
        dropped = before[name].abs()[m.weight == 0]
        if scope == "per_layer":
            assert kept.min() >= dropped.max()


def test_targets_cover_gpt2_conv1d_and_exclude_embeddings_and_tied_head():
    model = tiny_model("decoder")
    targets, tied = prunable_targets(model)
    names = {n for n, _ in targets}
    assert "transformer.h.0.attn.c_attn" in names and "transformer.h.1.mlp.c_proj" in names
    assert not any("wte" in n or "wpe" in n or "lm_head" in n or "ln_" in n for n in names)
    targets, tied = prunable_targets(model, include_head=True)
    assert tied == {"lm_head": "transformer.wte"}


@pytest.mark.parametrize("family", ["decoder", "encoder_decoder"])
def test_tied_lm_head_follows_pruned_embedding_and_export_reloads(family, tmp_path):
    model = tiny_model(family)
    method = MagnitudePruning(sparsity=0.5, include_embeddings=True, include_head=True, max_steps=3, lr=1e-3)
    batches = [tiny_batch(family, seed=i) for i in range(3)]
    model, _ = run_steps(method, model, batches, family=family)
    assert model.lm_head.weight is model.get_input_embeddings().weight
    assert float((model.lm_head.weight == 0).float().mean()) > 0.3
    assert weight_sparsity(method.target_modules()) == pytest.approx(0.5, abs=1e-4)
    method.export(model, tmp_path, MethodContext(family=family))
    reloaded = load_export(tmp_path)
    batch = tiny_batch(family)
    with torch.no_grad():
        assert (reloaded(**batch).logits - model(**batch).logits).abs().max() <= 1e-6


@pytest.mark.parametrize("family", FAMILIES)
def test_finetune_keeps_mask_and_export_round_trip_is_exact(family, tmp_path):
    model = tiny_model(family)
    method = MagnitudePruning(sparsity=0.8, max_steps=3, lr=1e-2)
    batches = [tiny_batch(family, seed=i) for i in range(3)]
    model, losses = run_steps(method, model, batches, family=family)
    assert all(torch.isfinite(torch.tensor(losses)))
    assert weight_sparsity(method.target_modules()) == pytest.approx(0.8, abs=1e-4)
    manifest = method.export(model, tmp_path, MethodContext(family=family))
    assert manifest["sparse_tensors"] > 0
    assert manifest["size_bytes"] == artifact_size_bytes(tmp_path)
    reloaded = load_export(tmp_path)
    assert type(reloaded) is type(model)
    batch = tiny_batch(family, seed=7)
    with torch.no_grad():
        diff = (reloaded(**batch).logits - model(**batch).logits).abs().max()
    assert diff <= 1e-6


def test_export_of_80_percent_model_is_several_times_smaller_than_dense(tmp_path):
    # the prunable share of a tiny model is small, so make its blocks dominate the size
    model = tiny_model("decoder", n_embd=128, n_layer=2)
    dense_dir, sparse_dir = tmp_path / "dense", tmp_path / "sparse"
    model.save_pretrained(dense_dir)
    method = MagnitudePruning(sparsity=0.8, include_embeddings=True, include_head=True)
    ctx = MethodContext(family="decoder")
    model = method.finalize(method.prepare(model, ctx), ctx)
    method.export(model, sparse_dir, ctx)
    ratio = artifact_size_bytes(dense_dir) / artifact_size_bytes(sparse_dir)
    assert ratio > 3.0, ratio


def test_cubic_schedule_start_middle_end():
    assert cubic_sparsity(0, 0.8, 0, 100) == 0.0
    assert cubic_sparsity(50, 0.8, 0, 100) == pytest.approx(0.8 * (1 - 0.5**3))
    assert cubic_sparsity(100, 0.8, 0, 100) == 0.8
    assert cubic_sparsity(150, 0.8, 0, 100) == 0.8
    assert cubic_sparsity(10, 0.8, 20, 100) == 0.0


def test_gradual_schedule_grows_masks_during_training():
    model = tiny_model("encoder")
    method = MagnitudePruning(sparsity=0.6, schedule="gradual", max_steps=4, lr=1e-3, start_step=0, end_step=4)
    ctx = MethodContext(family="encoder")
    method.check(ctx)
    model = method.prepare(model, ctx)
    seen = [weight_sparsity_masks(method)]
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    for step in range(1, 5):
        loss = model(**tiny_batch("encoder", seed=step)).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
        method.on_train_step(model, step, 4)
        seen.append(weight_sparsity_masks(method))
    expected = [cubic_sparsity(s, 0.6, 0, 4) for s in range(5)]
    assert seen == pytest.approx(expected, abs=1e-3)
    assert seen[2] == pytest.approx(0.6 * 0.875, abs=1e-3)
    method.finalize(model, ctx)
    assert weight_sparsity(method.target_modules()) == pytest.approx(0.6, abs=1e-4)


def weight_sparsity_masks(method):
    masks = [m.weight_mask for m in method.target_modules()]
    return sum(int((mask == 0).sum()) for mask in masks) / sum(mask.numel() for mask in masks)


def test_when_before_fine_tunes_with_the_teachers_budget_unless_overridden():
    ctx = MethodContext(family="decoder", finetune_steps=300, finetune_lr=3e-3)
    method = MagnitudePruning(when="before")
    method.check(ctx)
    assert (method.training_steps, method.learning_rate) == (300, 3e-3)
    assert method.row_params()["max_steps"] == 300 and method.row_params()["lr"] == 3e-3
    override = MagnitudePruning(when="before", max_steps=20, lr=1e-4)
    override.check(ctx)
    assert (override.training_steps, override.learning_rate) == (20, 1e-4)
    after = MagnitudePruning()
    after.check(ctx)
    assert (after.training_steps, after.learning_rate) == (0, 5e-5)  # after: no inherited budget
    with pytest.raises(ConfigError, match="does not fine-tune"):
        MagnitudePruning(when="before").check(MethodContext(family="decoder"))


def test_pretrained_model_head_is_initialised_under_the_runs_seed(tmp_path):
    """A hub-style checkpoint without a task head: the new head depends on the seed only, not on
    what consumed the global RNG before (a teacher fine-tuned in this process, or loaded)."""
    from types import SimpleNamespace

    from transformers import AutoModelForTokenClassification, GPT2Config, GPT2Model

    from compbench.models.loader import ModelSpec

    GPT2Model(GPT2Config(n_layer=1, n_embd=16, n_head=2, vocab_size=50)).save_pretrained(tmp_path)
    spec = ModelSpec(name="local", name_or_path=str(tmp_path))
    task = SimpleNamespace(auto_model_class=lambda: AutoModelForTokenClassification,
                           model_kwargs=lambda: {"num_labels": 3})
    tokenizer = SimpleNamespace(pad_token_id=0)
    torch.manual_seed(1)
    first = spec.build_model(task, tokenizer, seed=7).classifier.weight.detach().clone()
    torch.randn(1000)  # e.g. a teacher's fine-tuning used the RNG
    second = spec.build_model(task, tokenizer, seed=7).classifier.weight.detach().clone()
    other_seed = spec.build_model(task, tokenizer, seed=8).classifier.weight.detach().clone()
    assert torch.equal(first, second) and not torch.equal(first, other_seed)


def test_when_before_starts_from_pretrained():
    assert MagnitudePruning(when="before", max_steps=10).start_from == "pretrained"
    assert MagnitudePruning().start_from == "finetuned"
    assert MagnitudePruning(max_steps=7, lr=3e-4).training_steps == 7


@pytest.mark.parametrize(
    "params",
    [
        {"sparsity": 1.0},
        {"sparsity": -0.1},
        {"scope": "layer"},
        {"schedule": "cubic"},
        {"when": "during"},
        {"schedule": "gradual"},
        {"schedule": "gradual", "max_steps": 10, "start_step": 10},
        {"when": "before", "max_steps": 0},
        {"value_dtype": "int8"},
        {"update_every": 0},
    ],
)
def test_invalid_parameters_refused_with_one_sentence(params):
    with pytest.raises(ConfigError) as err:
        MagnitudePruning(**params)
    message = str(err.value)
    assert message.endswith(".") and message.count(". ") == 0


def test_yaml_builds():
    from omegaconf import OmegaConf

    cfg = OmegaConf.load("conf/method/prune_magnitude.yaml")
    method = build_method(cfg)
    assert isinstance(method, MagnitudePruning)
    assert "sparsity" in method.row_params() and "_targets" not in method.row_params()
