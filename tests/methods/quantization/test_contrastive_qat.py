"""Tests of ``contrastive_qat`` (QuantGPT/QuantBART): dynamic scaling and the method (the contrastive
term itself: ``tests/methods/distillation/test_contrastive.py``)."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F



def _unit(*shape, seed=0):
    return F.normalize(torch.randn(*shape, generator=torch.Generator().manual_seed(seed)), dim=-1)


# ------------------------------------------------------------------------------ dynamic scaling
def _initialised_quantizer(bits, weight, **kwargs):
    from compbench.methods.quantization.quantizers import get_quantizer

    quantizer = get_quantizer("dynamic_scaling")(bits, **kwargs)
    quantizer.init_from(weight)
    return quantizer


def test_dynamic_scaling_is_registered_and_clips_at_gamma_mean_abs():
    from compbench.methods.quantization.quantizers import DynamicScalingQuantizer
    from compbench.methods.quantization.quantizers import QUANTIZERS

    assert QUANTIZERS["dynamic_scaling"] is DynamicScalingQuantizer
    weight = torch.randn(16, 32, generator=torch.Generator().manual_seed(0))
    quantizer = _initialised_quantizer(4, weight, per_channel=False)
    alpha = float(quantizer.gamma.detach()) * float(weight.abs().mean())
    out = quantizer(weight).detach()
    assert float(out.abs().max()) == pytest.approx(alpha, rel=1e-5)
    # Weights well inside the clip stay within half a step of themselves.
    inside = weight.abs() < alpha
    assert float((out - weight)[inside].abs().max()) <= alpha / quantizer.qmax / 2 + 1e-6


def test_gamma_init_beats_max_clip_at_2_bits():
    weight = torch.randn(64, 64, generator=torch.Generator().manual_seed(1))
    quantizer = _initialised_quantizer(2, weight, per_channel=False)
    err_init = float((quantizer(weight).detach() - weight).pow(2).mean())
    with torch.no_grad():
        quantizer.gamma.fill_(float(weight.abs().max() / weight.abs().mean()))
    err_max = float((quantizer(weight).detach() - weight).pow(2).mean())
    assert err_init < 0.6 * err_max


def test_gamma_gradient_matches_the_paper_formula_inside_and_outside_the_clip():
    weight = torch.randn(8, 16, generator=torch.Generator().manual_seed(2))
    quantizer = _initialised_quantizer(2, weight, per_channel=False)
    upstream = torch.randn(8, 16, generator=torch.Generator().manual_seed(3))
    (quantizer(weight) * upstream).sum().backward()
    mean_abs = weight.abs().mean()
    alpha = quantizer.gamma.detach().reshape(()) * mean_abs
    k = quantizer.qmax
    u = weight / alpha
    inside = weight.abs() < alpha
    dq_dalpha = torch.where(inside, torch.round(k * u) / k - u, torch.sign(weight))
    expected = mean_abs * (upstream * dq_dalpha).sum()
    got = quantizer.gamma.grad.reshape(())
    assert torch.isfinite(got) and float(got) != 0.0
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-6)
    # Both populations exist and both contribute.
    assert inside.any() and (~inside).any()
    inside_part = float((upstream * dq_dalpha)[inside].sum())
    outside_part = float((upstream * dq_dalpha)[~inside].sum())
    assert inside_part != 0.0 and outside_part != 0.0


def test_gamma_gets_gradient_from_clipped_weights_alone():
    weight = torch.randn(4, 8, generator=torch.Generator().manual_seed(4))
    quantizer = _initialised_quantizer(2, weight, per_channel=False)
    alpha = float(quantizer.gamma.detach()) * float(weight.abs().mean())
    outside = (weight.abs() >= alpha).float()
    (quantizer(weight) * outside).sum().backward()  # loss only sees the clipped weights
    grad = float(quantizer.gamma.grad)
    assert math.isfinite(grad)
    assert grad == pytest.approx(float(weight.abs().mean() * (torch.sign(weight) * outside).sum()), rel=1e-5)
    # ... while the weights themselves get the STE gradient: 1 inside the clip, 0 outside.
    weight_param = weight.clone().requires_grad_(True)
    quantizer(weight_param).sum().backward()
    torch.testing.assert_close(weight_param.grad, (weight.abs() < alpha).float())


@pytest.mark.parametrize("bits", [2, 4, 8])
@pytest.mark.parametrize("grouping", [dict(per_channel=False), dict(per_channel=True), dict(group_size=8)])
def test_fused_dynamic_scaling_equals_autograd_through_clip_and_ste_round(bits, grouping):
    """The fused forward/backward against the reference path: plain autograd through the base
    quantizer's clip, STE round and clamp (the paper's gradient, checked above)."""
    from compbench.methods.quantization.quantizers import Quantizer

    weight = torch.randn(6, 32, generator=torch.Generator().manual_seed(9))
    weight[0, :2] = torch.tensor([3.0, -4.0])  # clipped values at every bit-width
    upstream = torch.randn(6, 32, generator=torch.Generator().manual_seed(10))
    results = []
    for forward in (lambda q, w: q(w), lambda q, w: Quantizer.forward(q, w)):
        quantizer = _initialised_quantizer(bits, weight, **grouping)
        with torch.no_grad():  # off the 8-bit init's alpha = max|w|: at an exact tie |w| = alpha
            quantizer.gamma.mul_(0.9)  # autograd splits min/max gradients in half; the docstring's rule counts it as clipped
        w = weight.clone().requires_grad_(True)
        out = forward(quantizer, w)
        (out * upstream).sum().backward()
        results.append((out.detach(), w.grad, quantizer.gamma.grad))
    (fused, fused_w, fused_g), (ref, ref_w, ref_g) = results
    torch.testing.assert_close(fused, ref, rtol=0, atol=1e-6)
    torch.testing.assert_close(fused_w, ref_w)
    torch.testing.assert_close(fused_g, ref_g, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("bits", [2, 3, 4])
def test_dynamic_scaling_levels_per_channel(bits):
    weight = torch.randn(6, 40, generator=torch.Generator().manual_seed(5))
    quantizer = _initialised_quantizer(bits, weight, per_channel=True)
    frozen = quantizer.quantize(weight).dequantize()
    for row in frozen:
        assert row.unique().numel() <= 2**bits - 1  # symmetric levels: 2**bits - 1 of 2**bits codes
    torch.testing.assert_close(frozen, quantizer(weight).detach(), atol=1e-3, rtol=1e-3)


# ------------------------------------------------------------------------------ the method
from method_harness import reference_sequence_infonce, run_steps, tiny_batch, tiny_model  # noqa: E402

from compbench.errors import ConfigError  # noqa: E402
from compbench.methods import build_method  # noqa: E402
from compbench.methods.base import MethodContext, TrainingOutputs  # noqa: E402
from compbench.methods.quantization.contrastive_qat import AUX_ATTR, ContrastiveQAT  # noqa: E402
from compbench.methods.quantization.quantizers import DynamicScalingQuantizer  # noqa: E402
from compbench.methods.export import load_export  # noqa: E402
from compbench.methods.quantization.quantized_modules import QuantEmbedding, QuantLinear  # noqa: E402

FAMILIES = ["decoder", "encoder_decoder", "encoder"]
SMALL = dict(projection_dim=16, max_steps=4)


def _train(family, steps=4, seed=0, **params):
    method = ContrastiveQAT(**{**SMALL, **params})
    teacher = tiny_model(family, seed=seed)
    student = tiny_model(family, seed=seed)
    batches = [tiny_batch(family, seed=step % 2) for step in range(steps)]
    torch.manual_seed(seed)
    model, losses = run_steps(method, student, batches, teacher=teacher, family=family)
    return method, model, losses


def _weight_quantizers(model):
    return [m.weight_quantizer for m in model.modules() if isinstance(m, (QuantLinear, QuantEmbedding))]


def test_yaml_builds_the_headline_setting():
    from pathlib import Path

    from omegaconf import OmegaConf

    conf = Path(__file__).resolve().parents[3] / "conf" / "method" / "contrastive_qat.yaml"
    assert conf.read_text().startswith("# compbench ")
    method = build_method(OmegaConf.load(conf))
    assert isinstance(method, ContrastiveQAT)
    assert (method.w_bits, method.e_bits, method.a_bits) == (2, 2, 8)
    assert method.requires_teacher and method.needs_hidden_states
    assert method.contrastive and method.dynamic_scaling
    assert "kd_alpha" not in method.row_params() and method.row_params()["contrastive_layers"] == "-1"


@pytest.mark.parametrize(
    "bad",
    [
        dict(distill=False), dict(kd_alpha=0.5), dict(contrastive_layers=[]), dict(contrastive_layers="last"),
        dict(contrastive_layers=[-1, -1]), dict(contrastive_temperature=0.0), dict(negatives="random"),
        dict(negative_source="teacher_bank"), dict(negative_source="student", negatives="bank"),
        dict(positive="student"), dict(token_reduction="max"), dict(num_random_negatives=-1),
        dict(momentum=1.0), dict(projection_dim=-1), dict(quantizer_weight_decay=-1.0),
        dict(contrastive_weight=-0.1), dict(act_quantizer="dynamic_scaling"), dict(w_bits=5),
        dict(logit_weight=0.0, contrastive_weight=0.0), dict(quantizer="nope"),
    ],
)
def test_bad_parameters_raise_config_error(bad):
    with pytest.raises(ConfigError):
        ContrastiveQAT(**bad)


def test_out_of_range_layer_is_refused_at_prepare():
    method = ContrastiveQAT(contrastive_layers=[7], **SMALL)
    with pytest.raises(ConfigError, match="out of range"):
        method.prepare(tiny_model("decoder"), MethodContext(family="decoder", teacher=tiny_model("decoder")))


def test_check_refuses_a_run_without_teacher():
    with pytest.raises(ConfigError, match="teacher"):
        ContrastiveQAT().check(MethodContext(family="decoder", teacher=None, teacher_available=False))


@pytest.mark.parametrize("family", FAMILIES)
def test_trains_finalizes_and_drops_the_auxiliaries(family):
    method, model, losses = _train(family)
    assert all(math.isfinite(v) for v in losses)
    assert type(model).__name__ == type(tiny_model(family)).__name__
    assert not hasattr(model, AUX_ATTR) and not any("contrastive" in k for k in model.state_dict())
    assert hasattr(model(**tiny_batch(family)), "logits")


def _one_step(family, **params):
    """prepare, one forward/backward; returns (method, prepared model, loss, logs, teacher out)."""
    method = ContrastiveQAT(**{**SMALL, **params})
    teacher, student = tiny_model(family, seed=0), tiny_model(family, seed=1)
    model = method.prepare(student, MethodContext(family=family, teacher=teacher)).train()
    batch = tiny_batch(family)
    flags = dict(output_hidden_states=method.needs_hidden_states)
    out = model(**batch, **flags)
    with torch.no_grad():
        teacher_out = teacher(**batch, **flags)
    loss, logs = method.training_loss(TrainingOutputs(batch, out, teacher_out, out.loss, model))
    loss.backward()
    return method, model, loss, logs, out, teacher_out, batch


@pytest.mark.parametrize("family", ["decoder", "encoder_decoder"])
def test_every_gamma_gets_a_finite_nonzero_gradient(family):
    _, model, *_ = _one_step(family)
    quantizers = _weight_quantizers(model)
    assert quantizers and all(isinstance(q, DynamicScalingQuantizer) for q in quantizers)
    for quantizer in quantizers:
        grad = quantizer.gamma.grad
        assert grad is not None and torch.isfinite(grad).all() and float(grad.abs().sum()) > 0


def test_ablation_contrastive_off_is_exactly_logit_kd():
    from compbench.methods.distillation.losses import logit_kd_loss, valid_token_mask

    method, model, loss, logs, out, teacher_out, batch = _one_step("decoder", contrastive=False)
    assert not method.needs_hidden_states and out.hidden_states is None
    assert not hasattr(model, AUX_ATTR) and "loss/contrastive" not in logs
    kd = logit_kd_loss(out.logits, teacher_out.logits, 1.0, mask=valid_token_mask(batch))
    torch.testing.assert_close(loss, kd)
    # ... and the contrastive term is really part of the loss when switched on.
    _, _, loss_on, logs_on, *_ = _one_step("decoder")
    assert logs_on["loss/contrastive"] > 0
    assert float(loss_on.detach()) == pytest.approx(logs_on["loss/kd"] + 0.1 * logs_on["loss/contrastive"], rel=1e-5)


def test_ablation_dynamic_scaling_off_is_pact_per_module_from_the_same_clip():
    """The paper's Table 7 ablation: PACT's gradient; granularity, grid and initial clip unchanged."""
    from compbench.methods.quantization.quantizers import PACTQuantizer

    method_ds = ContrastiveQAT(**SMALL)
    full = method_ds.prepare(tiny_model("decoder", seed=1), MethodContext(family="decoder", teacher=tiny_model("decoder")))
    _, model, *_ = _one_step("decoder", dynamic_scaling=False)
    quantizers = _weight_quantizers(model)
    assert quantizers and all(type(q) is PACTQuantizer for q in quantizers)
    assert not any(isinstance(m, DynamicScalingQuantizer) for m in model.modules())
    pairs = [(m.weight, m.weight_quantizer, f.weight_quantizer) for m, f in zip(
        [m for m in model.modules() if isinstance(m, (QuantLinear, QuantEmbedding))],
        [m for m in full.modules() if isinstance(m, (QuantLinear, QuantEmbedding))])]
    for weight, pact, dynamic in pairs:
        assert pact.alpha.numel() == 1 and pact.qmax == dynamic.qmax  # one clip per module, same grid
        start_alpha = float(dynamic.gamma) * float(weight.detach().abs().mean())
        assert float(pact.alpha) == pytest.approx(start_alpha, rel=1e-5)
        # ... so the first forward is the same quantized weight (the models share seed 1).
        torch.testing.assert_close(pact(weight.detach()), dynamic(weight.detach()))


def test_bank_is_sized_from_the_model_vocabulary():
    method = ContrastiveQAT(**SMALL)
    model = method.prepare(tiny_model("decoder"), MethodContext(family="decoder", teacher=tiny_model("decoder")))
    bank = getattr(model, AUX_ATTR)["-1"].bank
    assert bank.keys.shape == (model.get_input_embeddings().weight.shape[0], 16)


def test_task_weight_adds_the_task_loss():
    _, _, loss, logs, out, *_ = _one_step("decoder", contrastive=False, task_weight=0.5)
    assert float(loss.detach()) == pytest.approx(logs["loss/kd"] + 0.5 * float(out.loss.detach()), rel=1e-5)


def test_contrastive_term_decreases_when_training_on_a_fixed_batch():
    method = ContrastiveQAT(**{**SMALL, "logit_weight": 0.0, "contrastive_weight": 1.0})
    teacher, student = tiny_model("decoder", seed=0), tiny_model("decoder", seed=1)
    model = method.prepare(student, MethodContext(family="decoder", teacher=teacher)).train()
    opt = torch.optim.AdamW(method.param_groups(model, 3e-3, 0.0))
    batch = tiny_batch("decoder")
    with torch.no_grad():
        teacher_out = teacher(**batch, output_hidden_states=True)
    history = []
    for _ in range(12):
        out = model(**batch, output_hidden_states=True)
        loss, logs = method.training_loss(TrainingOutputs(batch, out, teacher_out, out.loss, model))
        opt.zero_grad()
        loss.backward()
        opt.step()
        history.append(logs["loss/contrastive"])
    assert history[-1] < 0.7 * history[0]


def test_first_step_loss_equals_the_written_out_objective():
    """One step's loss from plain torch ops: KL(teacher || student) over valid tokens plus
    0.1 x the in-sequence InfoNCE computed position by position from the heads' outputs."""
    method, model, loss, logs, out, teacher_out, batch = _one_step("decoder")
    aux = getattr(model, AUX_ATTR)["-1"]
    with torch.no_grad():
        q = F.normalize(aux.student_head(out.hidden_states[-1]), dim=-1)
        k = F.normalize(aux.teacher_head(teacher_out.hidden_states[-1]), dim=-1)
    ids, mask = batch["input_ids"], batch["attention_mask"].bool()
    bank = torch.zeros(aux.bank.keys.shape)
    for token in ids[mask].unique():  # the first batch fills each slot with the token's mean key
        bank[token] = F.normalize(k[mask][ids[mask] == token].mean(0), dim=0)
    contrast = reference_sequence_infonce(q, k, bank[ids], ids, mask, 0.1)
    log_p_t = torch.log_softmax(teacher_out.logits, -1)
    kl = (log_p_t.exp() * (log_p_t - torch.log_softmax(out.logits.detach(), -1))).sum(-1)[mask].mean()
    assert logs["loss/contrastive"] == pytest.approx(contrast, rel=1e-4)
    assert float(loss.detach()) == pytest.approx(float(kl) + 0.1 * contrast, rel=1e-4)


def test_training_is_deterministic_under_a_seed_and_lowers_the_loss():
    _, _, first = _train("decoder", steps=4, seed=0)
    _, _, again = _train("decoder", steps=4, seed=0)
    assert first == again
    _, _, longer = _train("decoder", steps=8, seed=0)  # batches alternate between two: compare like with like
    assert longer[-2] < longer[0] and longer[-1] < longer[1]


@pytest.mark.parametrize("family", ["decoder", "encoder_decoder"])
def test_export_round_trip_and_2bit_levels(tmp_path, family):
    method, model, _ = _train(family, steps=2)
    ctx = MethodContext(family=family)
    manifest = method.export(model, tmp_path, ctx)
    from safetensors import safe_open

    with safe_open(str(tmp_path / "model.safetensors"), "pt") as stored:
        keys = list(stored.keys())
    assert not any(AUX_ATTR in k or "bank" in k or "student_head" in k or "teacher_head" in k for k in keys)
    assert manifest["size_bytes"] > 0
    reloaded = load_export(tmp_path)
    assert type(reloaded) is type(model)
    batch = tiny_batch(family, seed=3)
    with torch.no_grad():
        expected, got = model(**batch).logits, reloaded(**batch).logits
    assert float((expected - got).abs().max()) <= 1e-5
    # 2-bit weights: at most 4 (here 3, symmetric ternary) distinct values per output channel.
    frozen = [m for m in model.modules() if hasattr(m, "quantized_weight")]
    assert frozen
    for module in frozen:
        assert module.quantized_weight.bits == 2
        for row in module.weight.detach().reshape(module.weight.shape[0], -1):
            assert row.unique().numel() <= 4
    for name, param in reloaded.named_parameters():
        if name.endswith("c_attn.weight") or name.endswith("q_proj.weight"):
            assert all(row.unique().numel() <= 4 for row in param.detach())


def test_export_refuses_a_model_that_was_not_finalized(tmp_path):
    method = ContrastiveQAT(**SMALL)
    model = method.prepare(tiny_model("decoder"), MethodContext(family="decoder", teacher=tiny_model("decoder")))
    with pytest.raises(ConfigError, match="finalize"):
        method.export(model, tmp_path, MethodContext(family="decoder"))
