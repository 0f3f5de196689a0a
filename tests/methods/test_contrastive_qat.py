"""Tests of ``contrastive_qat`` (QuantGPT/QuantBART): memory bank, InfoNCE, dynamic scaling, method."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from compbench.methods.contrastive_qat import TokenContrast, TokenMemoryBank, token_contrastive_loss


def _unit(*shape, seed=0):
    return F.normalize(torch.randn(*shape, generator=torch.Generator().manual_seed(seed)), dim=-1)


# ------------------------------------------------------------------------------ memory bank
def test_bank_momentum_update_of_a_known_token():
    bank = TokenMemoryBank(memory_size=4, dim=3, vocab_size=10, momentum=0.75)
    first, second = _unit(1, 3, seed=1), _unit(1, 3, seed=2)
    bank.update(torch.tensor([7]), first)
    torch.testing.assert_close(bank.keys[0], first[0])
    bank.update(torch.tensor([7]), second)
    expected = F.normalize(0.75 * first[0] + 0.25 * second[0], dim=0)
    torch.testing.assert_close(bank.keys[0], expected)
    assert len(bank) == 1 and bank.ids[0] == 7


def test_bank_averages_repeated_tokens_of_a_batch():
    bank = TokenMemoryBank(memory_size=4, dim=3, vocab_size=10, momentum=0.5)
    keys = _unit(3, 3, seed=3)
    bank.update(torch.tensor([5, 5, 6]), keys)
    slot = int(bank.slot_of_id[5])
    torch.testing.assert_close(bank.keys[slot], F.normalize(keys[0] + keys[1], dim=0))
    assert len(bank) == 2


def test_bank_dequeues_oldest_tokens_first_when_full():
    bank = TokenMemoryBank(memory_size=3, dim=2, vocab_size=20, momentum=0.5)
    bank.update(torch.tensor([1, 2]), _unit(2, 2, seed=4))
    bank.update(torch.tensor([3]), _unit(1, 2, seed=5))
    assert set(bank.ids.tolist()) == {1, 2, 3}
    new_keys = _unit(2, 2, seed=6)
    bank.update(torch.tensor([4, 5]), new_keys)  # evicts 1 and 2, the two oldest
    assert set(bank.ids.tolist()) == {3, 4, 5}
    assert bank.slot_of_id[1] == -1 and bank.slot_of_id[2] == -1
    for token, key in zip((4, 5), new_keys):
        torch.testing.assert_close(bank.keys[bank.slot_of_id[token]], key)
    # A known token is momentum-updated in place, it is not re-enqueued (no eviction).
    bank.update(torch.tensor([3]), _unit(1, 2, seed=7))
    assert set(bank.ids.tolist()) == {3, 4, 5}
    bank.update(torch.tensor([6]), _unit(1, 2, seed=8))  # now 3 is the oldest
    assert set(bank.ids.tolist()) == {4, 5, 6}


# ------------------------------------------------------------------------------ InfoNCE
def _reference_infonce(q, k, ids, bank_keys, bank_ids, tau):
    """Position by position, straight from the formula in the module docstring."""
    total = 0.0
    for i in range(len(ids)):
        pos = math.exp(float(q[i] @ k[i]) / tau)
        neg = sum(
            math.exp(float(q[i] @ bank_keys[j]) / tau)
            for j in range(len(bank_ids))
            if bank_ids[j] >= 0 and bank_ids[j] != ids[i]
        )
        total += -math.log(pos / (pos + neg))
    return total / len(ids)


def test_infonce_matches_reference():
    q, k, bank_keys = _unit(6, 5, seed=10), _unit(6, 5, seed=11), _unit(8, 5, seed=12)
    ids = torch.tensor([3, 4, 3, 9, 1, 2])
    bank_ids = torch.tensor([3, 4, 5, -1, 9, 7, 8, -1])
    got = token_contrastive_loss(q, k, ids, bank_keys, bank_ids, temperature=0.1)
    assert float(got) == pytest.approx(_reference_infonce(q, k, ids, bank_keys, bank_ids, 0.1), rel=1e-5)


def test_infonce_without_negatives_is_zero():
    q = _unit(2, 4, seed=13)
    got = token_contrastive_loss(q, q, torch.tensor([1, 2]), _unit(3, 4), torch.tensor([-1, -1, -1]), 0.1)
    assert float(got) == pytest.approx(0.0, abs=1e-6)


def test_token_contrast_ignores_padding_positions():
    torch.manual_seed(0)
    contrast = TokenContrast(hidden_size=8, projection_dim=4, memory_size=16, vocab_size=32, momentum=0.5)
    student, teacher = torch.randn(2, 5, 8), torch.randn(2, 5, 8)
    ids = torch.randint(0, 32, (2, 5))
    mask = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 0]], dtype=torch.bool)
    garbage_student, garbage_teacher = student.clone(), teacher.clone()
    garbage_student[~mask] = 1e3
    garbage_teacher[~mask] = -1e3
    contrast_copy = TokenContrast(8, 4, 16, 32, 0.5)
    contrast_copy.load_state_dict(contrast.state_dict())
    loss = contrast(student, teacher, ids, mask, 0.1)
    loss_garbage = contrast_copy(garbage_student, garbage_teacher, ids, mask, 0.1)
    torch.testing.assert_close(loss, loss_garbage)
    assert len(contrast.bank) == len(torch.unique(ids[mask]))


def test_contrastive_loss_decreases_on_a_fixed_batch():
    torch.manual_seed(0)
    contrast = TokenContrast(hidden_size=16, projection_dim=8, memory_size=64, vocab_size=40, momentum=0.5)
    student_hidden = torch.randn(2, 10, 16, requires_grad=True)
    teacher_hidden = torch.randn(2, 10, 16)
    ids = torch.randint(0, 40, (2, 10))
    mask = torch.ones(2, 10, dtype=torch.bool)
    opt = torch.optim.Adam([student_hidden, *contrast.parameters()], lr=0.05)
    losses = []
    for _ in range(15):
        loss = contrast(student_hidden, teacher_hidden, ids, mask, 0.1)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    assert losses[-1] < 0.5 * losses[0]


# ------------------------------------------------------------------------------ dynamic scaling
def _initialised_quantizer(bits, weight, **kwargs):
    from compbench.methods.quantizers import get_quantizer

    quantizer = get_quantizer("dynamic_scaling")(bits, **kwargs)
    quantizer.init_from(weight)
    return quantizer


def test_dynamic_scaling_is_registered_and_clips_at_gamma_mean_abs():
    from compbench.methods.contrastive_qat import DynamicScalingQuantizer
    from compbench.methods.quantizers import QUANTIZERS

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


@pytest.mark.parametrize("bits", [2, 3, 4])
def test_dynamic_scaling_levels_per_channel(bits):
    weight = torch.randn(6, 40, generator=torch.Generator().manual_seed(5))
    quantizer = _initialised_quantizer(bits, weight, per_channel=True)
    frozen = quantizer.quantize(weight).dequantize()
    for row in frozen:
        assert row.unique().numel() <= 2**bits - 1  # symmetric levels: 2**bits - 1 of 2**bits codes
    torch.testing.assert_close(frozen, quantizer(weight).detach(), atol=1e-3, rtol=1e-3)


# ------------------------------------------------------------------------------ the method
from method_harness import run_steps, tiny_batch, tiny_model  # noqa: E402

from compbench.errors import ConfigError  # noqa: E402
from compbench.methods import build_method  # noqa: E402
from compbench.methods.base import MethodContext, TrainingOutputs  # noqa: E402
from compbench.methods.contrastive_qat import AUX_ATTR, ContrastiveQAT, DynamicScalingQuantizer  # noqa: E402
from compbench.methods.export import load_export  # noqa: E402
from compbench.methods.quantizers import QuantEmbedding, QuantLinear  # noqa: E402

FAMILIES = ["decoder", "encoder_decoder", "encoder"]
#: Recorded from this implementation (see test_loss_regression_fixed_seed).
EXPECTED_REGRESSION_LOSSES = [0.5971692, 0.4188277, 0.2098309, 0.1723392]
SMALL = dict(memory_size=64, projection_dim=16, max_steps=4)


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

    conf = Path(__file__).resolve().parents[2] / "conf" / "method" / "contrastive_qat.yaml"
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
        dict(contrastive_layers=[-1, -1]), dict(contrastive_temperature=0.0), dict(memory_size=0),
        dict(momentum=1.0), dict(projection_dim=-1),
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
    loss, logs = method.training_loss(TrainingOutputs(batch, out, teacher_out, out.loss))
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
    from compbench.methods.distill_losses import logit_kd_loss, valid_token_mask

    method, model, loss, logs, out, teacher_out, batch = _one_step("decoder", contrastive=False)
    assert not method.needs_hidden_states and out.hidden_states is None
    assert not hasattr(model, AUX_ATTR) and "loss/contrastive" not in logs
    kd = logit_kd_loss(out.logits, teacher_out.logits, 1.0, mask=valid_token_mask(batch))
    torch.testing.assert_close(loss, kd)
    # ... and the contrastive term is really part of the loss when switched on.
    _, _, loss_on, logs_on, *_ = _one_step("decoder")
    assert logs_on["loss/contrastive"] > 0
    assert float(loss_on.detach()) == pytest.approx(logs_on["loss/kd"] + 0.1 * logs_on["loss/contrastive"], rel=1e-5)


def test_ablation_dynamic_scaling_off_uses_the_plain_quantizer():
    from compbench.methods.quantizers import PACTQuantizer

    _, model, *_ = _one_step("decoder", dynamic_scaling=False)
    quantizers = _weight_quantizers(model)
    assert quantizers and all(type(q) is PACTQuantizer for q in quantizers)
    assert not any(isinstance(m, DynamicScalingQuantizer) for m in model.modules())


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
        loss, logs = method.training_loss(TrainingOutputs(batch, out, teacher_out, out.loss))
        opt.zero_grad()
        loss.backward()
        opt.step()
        history.append(logs["loss/contrastive"])
    assert history[-1] < 0.7 * history[0]


def test_loss_regression_fixed_seed():
    """Losses of 4 steps on the tiny GPT-2 (seed 0); recorded from this implementation.

    A change here means the method's numerics changed: check it is intended, then re-record.
    """
    _, _, losses = _train("decoder", steps=4, seed=0)
    expected = EXPECTED_REGRESSION_LOSSES
    assert losses == pytest.approx(expected, rel=2e-3)


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
