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
