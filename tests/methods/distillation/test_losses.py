"""Distillation losses against straightforward reference computations."""

import math

import pytest
import torch
from torch import nn

from compbench.methods.distillation.losses import attention_loss, hidden_state_loss, logit_kd_loss, valid_token_mask


def _reference_kd(student, teacher, temperature, mask):
    """Loop-by-position KL(p_t || p_s) * T^2 averaged over the True positions."""
    values = []
    for b in range(student.shape[0]):
        for s in range(student.shape[1]):
            if not mask[b, s]:
                continue
            p_t = torch.softmax(teacher[b, s] / temperature, -1)
            p_s = torch.softmax(student[b, s] / temperature, -1)
            values.append(float((p_t * (p_t.log() - p_s.log())).sum()) * temperature**2)
    return sum(values) / len(values)


@pytest.mark.parametrize("temperature", [1.0, 2.0, 4.0])
def test_logit_kd_matches_reference(temperature):
    g = torch.Generator().manual_seed(0)
    student, teacher = torch.randn(3, 5, 7, generator=g), torch.randn(3, 5, 7, generator=g)
    mask = torch.rand(3, 5, generator=g) > 0.3
    got = float(logit_kd_loss(student, teacher, temperature, mask))
    assert got == pytest.approx(_reference_kd(student, teacher, temperature, mask), rel=1e-5)


def test_logit_kd_zero_when_equal_and_positive_otherwise():
    logits = torch.randn(2, 4, 9)
    assert float(logit_kd_loss(logits, logits.clone(), 2.0)) == pytest.approx(0.0, abs=1e-6)
    assert float(logit_kd_loss(logits + torch.randn(2, 4, 9), logits, 2.0)) > 1e-3


def test_logit_kd_ignores_masked_positions():
    student, teacher = torch.randn(2, 4, 6), torch.randn(2, 4, 6)
    mask = torch.tensor([[True, True, False, False], [True, False, False, False]])
    garbage = student.clone()
    garbage[~mask] = 1e3  # whatever sits at masked positions must not change the loss
    assert float(logit_kd_loss(garbage, teacher, 1.0, mask)) == pytest.approx(
        float(logit_kd_loss(student, teacher, 1.0, mask)), rel=1e-6
    )


def test_logit_kd_gradient_only_to_student():
    student = torch.randn(2, 3, 5, requires_grad=True)
    teacher = torch.randn(2, 3, 5)
    logit_kd_loss(student, teacher, 2.0).backward()
    assert student.grad is not None and student.grad.abs().sum() > 0


@pytest.mark.parametrize("temperature", [1.0, 2.0])
def test_logit_kd_gradient_matches_autograd_reference(temperature):
    """The hand-written backward equals autograd through the written-out equation, for the
    student and (when it requires grad) the teacher."""
    g = torch.Generator().manual_seed(3)
    student = torch.randn(3, 5, 11, generator=g, requires_grad=True)
    teacher = torch.randn(3, 5, 11, generator=g)
    mask = torch.rand(3, 5, generator=g) > 0.3
    loss = logit_kd_loss(student, teacher, temperature, mask)
    loss.backward()
    ref_student = student.detach().clone().requires_grad_(True)
    p_t = torch.softmax(teacher / temperature, -1)
    log_p_s = torch.log_softmax(ref_student / temperature, -1)
    per_position = (p_t * (p_t.log() - log_p_s)).sum(-1)
    reference = (per_position * mask).sum() / mask.sum() * temperature**2
    reference.backward()
    assert float(loss) == pytest.approx(float(reference), rel=1e-5)
    torch.testing.assert_close(student.grad, ref_student.grad, rtol=1e-5, atol=1e-7)
    assert student.grad[~mask].abs().max() == 0
    # A teacher that requires grad gets its gradient from autograd.
    trained_teacher = teacher.clone().requires_grad_(True)
    logit_kd_loss(student.detach(), trained_teacher, temperature, mask).backward()
    assert trained_teacher.grad is not None and trained_teacher.grad.abs().sum() > 0


def test_hidden_state_loss_matches_reference_with_projection():
    g = torch.Generator().manual_seed(1)
    student_hidden = tuple(torch.randn(2, 4, 6, generator=g) for _ in range(3))  # emb + 2 blocks
    teacher_hidden = tuple(torch.randn(2, 4, 8, generator=g) for _ in range(5))  # emb + 4 blocks
    layer_map = [(0, 1), (1, 3)]
    projection = nn.ModuleList(nn.Linear(6, 8) for _ in layer_map)
    mask = torch.tensor([[True, True, True, False], [True, True, False, False]])
    with torch.no_grad():
        got = float(hidden_state_loss(student_hidden, teacher_hidden, layer_map, mask, projection))
        expected = []
        for proj, (s, t) in zip(projection, layer_map):
            diff = proj(student_hidden[s + 1])[mask] - teacher_hidden[t + 1][mask]  # [valid, 8]
            expected.append(float(diff.pow(2).mean()))
    assert got == pytest.approx(sum(expected) / len(expected), rel=1e-5)


def test_hidden_state_loss_zero_for_identical_states():
    hidden = tuple(torch.randn(2, 3, 4) for _ in range(3))
    assert float(hidden_state_loss(hidden, hidden, [(0, 0), (1, 1)])) == 0.0


def test_attention_loss_matches_reference():
    g = torch.Generator().manual_seed(2)
    student = tuple(torch.softmax(torch.randn(2, 2, 4, 4, generator=g), -1) for _ in range(2))
    teacher = tuple(torch.softmax(torch.randn(2, 2, 4, 4, generator=g), -1) for _ in range(4))
    mask = torch.tensor([[True, True, True, True], [True, True, False, False]])
    layer_map = [(0, 1), (1, 3)]
    expected = 0.0
    for s, t in layer_map:
        values = [
            float((student[s][b, :, q] - teacher[t][b, :, q]).pow(2).sum(-1).mean())
            for b in range(2) for q in range(4) if mask[b, q]
        ]
        expected += sum(values) / len(values)
    got = float(attention_loss(student, teacher, layer_map, mask))
    assert got == pytest.approx(expected / len(layer_map), rel=1e-5)


def test_attention_loss_refuses_head_mismatch():
    with pytest.raises(ValueError, match="differ in shape"):
        attention_loss((torch.rand(1, 2, 3, 3),), (torch.rand(1, 4, 3, 3),), [(0, 0)])


def test_valid_token_mask_sides():
    batch = {
        "input_ids": torch.ones(2, 4, dtype=torch.long),
        "attention_mask": torch.tensor([[1, 1, 1, 0], [1, 1, 0, 0]]),
        "labels": torch.tensor([[5, -100, 3], [4, 4, -100]]),
    }
    assert valid_token_mask(batch).tolist() == [[True, True, True, False], [True, True, False, False]]
    assert valid_token_mask(batch, side="target").tolist() == [[True, False, True], [True, True, False]]
    with pytest.raises(ValueError):
        valid_token_mask(batch, side="decoder")


def test_all_false_mask_gives_zero_not_nan():
    loss = logit_kd_loss(torch.randn(1, 3, 4), torch.randn(1, 3, 4), 1.0, torch.zeros(1, 3, dtype=torch.bool))
    assert not math.isnan(float(loss)) and float(loss) == 0.0


@pytest.mark.parametrize(("family", "side"), [("encoder", "input"), ("decoder", "input"),
                                              ("encoder_decoder", "target")])
def test_output_side_follows_the_logits_of_each_family(family, side):
    from method_harness import tiny_batch, tiny_model

    from compbench.methods.distillation.losses import output_side

    model = tiny_model(family)
    batch = tiny_batch(family)
    with torch.no_grad():
        out = model(**batch)
    assert output_side(out) == side
    # The mask of that side has one entry per logit position.
    assert valid_token_mask(batch, side).shape == out.logits.shape[:2]
