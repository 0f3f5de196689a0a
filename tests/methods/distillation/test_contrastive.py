"""Tests of the token-level contrastive term (QuantGPT/QuantBART): the memory bank and InfoNCE."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from method_harness import reference_sequence_infonce

from compbench.methods.distillation.contrastive import (
    ContrastSettings,
    TokenContrast,
    TokenMemoryBank,
    sequence_contrastive_loss,
    token_contrastive_loss,
)


def _unit(*shape, seed=0):
    return F.normalize(torch.randn(*shape, generator=torch.Generator().manual_seed(seed)), dim=-1)


# ------------------------------------------------------------------------------ memory bank
def test_bank_momentum_update_of_a_known_token():
    bank = TokenMemoryBank(vocab_size=10, dim=3, momentum=0.75)
    first, second = _unit(1, 3, seed=1), _unit(1, 3, seed=2)
    bank.update(torch.tensor([7]), first)
    torch.testing.assert_close(bank.keys[7], first[0])
    bank.update(torch.tensor([7]), second)
    expected = F.normalize(0.75 * first[0] + 0.25 * second[0], dim=0)
    torch.testing.assert_close(bank.keys[7], expected)
    assert len(bank) == 1 and bool(bank.filled[7])


def test_bank_averages_repeated_tokens_of_a_batch():
    bank = TokenMemoryBank(vocab_size=10, dim=3, momentum=0.5)
    keys = _unit(3, 3, seed=3)
    bank.update(torch.tensor([5, 5, 6]), keys)
    torch.testing.assert_close(bank.keys[5], F.normalize(keys[0] + keys[1], dim=0))
    torch.testing.assert_close(bank.keys[6], keys[2])
    assert len(bank) == 2


def test_bank_has_a_slot_per_token_and_never_evicts():
    vocab = 50
    bank = TokenMemoryBank(vocab_size=vocab, dim=4, momentum=0.5)
    first = _unit(vocab, 4, seed=4)
    for start in range(0, vocab, 7):  # batches of new tokens fill the whole vocabulary
        ids = torch.arange(start, min(start + 7, vocab))
        bank.update(ids, first[ids])
    assert len(bank) == vocab
    torch.testing.assert_close(bank.keys, first)  # every token's first key is still there


# ------------------------------------------------------------------------------ InfoNCE
def _sequence_case():
    ids = torch.tensor([[3, 4, 3, 9, 1, 2, 4], [5, 5, 5, 6, 7, 0, 0]])
    mask = torch.tensor([[1, 1, 1, 1, 1, 1, 1], [1, 1, 1, 1, 1, 0, 0]], dtype=torch.bool)
    return _unit(2, 7, 5, seed=10), _unit(2, 7, 5, seed=11), _unit(2, 7, 5, seed=12), ids, mask


@pytest.mark.parametrize("reduction", ["mean", "sum"])
def test_sequence_infonce_matches_reference(reduction):
    q, pos, neg, ids, mask = _sequence_case()
    got = sequence_contrastive_loss(q, pos, neg, ids, mask, 0.1, reduction)
    assert float(got) == pytest.approx(reference_sequence_infonce(q, pos, neg, ids, mask, 0.1, reduction), rel=1e-5)


def test_sequence_negatives_are_distinct_and_exclude_the_own_token():
    # A sequence of one repeated token has no negative: every position's loss is -log 1 = 0.
    q = _unit(1, 4, 3, seed=13)
    ids, mask = torch.full((1, 4), 7), torch.ones(1, 4, dtype=torch.bool)
    assert float(sequence_contrastive_loss(q, q, _unit(1, 4, 3), ids, mask, 0.1)) == pytest.approx(0.0, abs=1e-6)
    # ids [1, 2, 2]: token 1's only negative is token 2, counted once (at its first occurrence);
    # token 2's positions have token 1 as their only negative.
    q, pos, neg = _unit(1, 3, 4, seed=14), _unit(1, 3, 4, seed=15), _unit(1, 3, 4, seed=16)
    got = sequence_contrastive_loss(q, pos, neg, torch.tensor([[1, 2, 2]]), torch.ones(1, 3, dtype=torch.bool),
                                    0.5, "sum")

    def term(i, j):  # -log softmax of the positive of position i against the one negative j
        a, b = float(q[0, i] @ pos[0, i]) / 0.5, float(q[0, i] @ neg[0, j]) / 0.5
        return -a + math.log(math.exp(a) + math.exp(b))

    assert float(got) == pytest.approx(term(0, 1) + term(1, 0) + term(2, 0), rel=1e-5)


def _reference_infonce(q, k, ids, bank_keys, bank_ids, tau):
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


def test_candidate_infonce_matches_reference():
    q, k, bank_keys = _unit(6, 5, seed=10), _unit(6, 5, seed=11), _unit(8, 5, seed=12)
    ids = torch.tensor([3, 4, 3, 9, 1, 2])
    bank_ids = torch.tensor([3, 4, 5, -1, 9, 7, 8, -1])
    got = token_contrastive_loss(q, k, ids, bank_keys, bank_ids, temperature=0.1)
    assert float(got) == pytest.approx(_reference_infonce(q, k, ids, bank_keys, bank_ids, 0.1), rel=1e-5)


def _contrast_and_inputs(seed=0, vocab=32, **kw):
    torch.manual_seed(seed)
    contrast = TokenContrast(hidden_size=8, projection_dim=4, vocab_size=vocab, momentum=0.5)
    student, teacher = torch.randn(2, 6, 8), torch.randn(2, 6, 8)
    ids = torch.tensor([[3, 4, 3, 9, 1, 2], [5, 5, 6, 7, 8, 0]])
    mask = torch.tensor([[1, 1, 1, 1, 1, 1], [1, 1, 1, 1, 1, 0]], dtype=torch.bool)
    return contrast, student, teacher, ids, mask


def _projected(contrast, student, teacher):
    with torch.no_grad():
        q = F.normalize(contrast.student_head(student), dim=-1)
        k = F.normalize(contrast.teacher_head(teacher), dim=-1)
    return q, k


@pytest.mark.parametrize("source", ["teacher", "student"])
@pytest.mark.parametrize("positive", ["teacher", "bank"])
def test_token_contrast_sequence_variants_match_reference(source, positive):
    contrast, student, teacher, ids, mask = _contrast_and_inputs()
    q, k = _projected(contrast, student, teacher)
    settings = ContrastSettings(negative_source=source, positive=positive)
    got = contrast(student, teacher, ids, mask, settings)
    bank = contrast.bank.keys  # updated with this batch before the loss
    for token in ids[mask].unique():  # the first batch's bank entries are the tokens' mean keys
        torch.testing.assert_close(bank[token], F.normalize(k[mask][ids[mask] == token].mean(0), dim=0))
    pos = bank[ids] if positive == "bank" else k
    neg = q if source == "student" else bank[ids]
    assert float(got.detach()) == pytest.approx(reference_sequence_infonce(q, pos, neg, ids, mask, 0.1), rel=1e-5)


def test_vocabulary_random_with_every_seen_token_equals_the_bank_variant():
    contrast, student, teacher, ids, mask = _contrast_and_inputs()
    contrast_copy = TokenContrast(8, 4, 32, 0.5)
    contrast_copy.load_state_dict(contrast.state_dict())
    seen = len(ids[mask].unique())
    random_all = contrast(student, teacher, ids, mask, ContrastSettings(negatives="vocabulary_random",
                                                                         num_random_negatives=seen))
    bank_all = contrast_copy(student, teacher, ids, mask, ContrastSettings(negatives="bank"))
    torch.testing.assert_close(random_all, bank_all)


def test_vocabulary_random_draws_only_seen_tokens_other_than_the_own():
    contrast, student, teacher, ids, mask = _contrast_and_inputs()
    q, k = _projected(contrast, student, teacher)
    # One negative per sequence: the loss of each position is -log(p / (p + n)) with n > 0 unless
    # the drawn token is the position's own, so it stays below log(1 + e^{2/tau}) and is finite.
    loss = contrast(student, teacher, ids, mask, ContrastSettings(negatives="vocabulary_random",
                                                                   num_random_negatives=1))
    assert torch.isfinite(loss) and 0 <= float(loss) <= math.log(1 + math.exp(2 / 0.1))


def test_token_contrast_ignores_padding_positions():
    torch.manual_seed(0)
    contrast = TokenContrast(hidden_size=8, projection_dim=4, vocab_size=32, momentum=0.5)
    student, teacher = torch.randn(2, 5, 8), torch.randn(2, 5, 8)
    ids = torch.randint(0, 32, (2, 5))
    mask = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 0]], dtype=torch.bool)
    garbage_student, garbage_teacher, garbage_ids = student.clone(), teacher.clone(), ids.clone()
    garbage_student[~mask] = 1e3
    garbage_teacher[~mask] = -1e3
    garbage_ids[~mask] = 31
    contrast_copy = TokenContrast(8, 4, 32, 0.5)
    contrast_copy.load_state_dict(contrast.state_dict())
    loss = contrast(student, teacher, ids, mask, 0.1)
    loss_garbage = contrast_copy(garbage_student, garbage_teacher, garbage_ids, mask, 0.1)
    torch.testing.assert_close(loss, loss_garbage)
    assert len(contrast.bank) == len(torch.unique(ids[mask]))


def test_token_id_outside_the_bank_is_refused():
    from compbench.errors import ConfigError

    contrast = TokenContrast(hidden_size=8, projection_dim=4, vocab_size=10, momentum=0.5)
    with pytest.raises(ConfigError, match="vocabulary"):
        contrast(torch.randn(1, 3, 8), torch.randn(1, 3, 8), torch.tensor([[1, 2, 10]]),
                 torch.ones(1, 3, dtype=torch.bool), 0.1)


def test_contrastive_loss_decreases_on_a_fixed_batch():
    torch.manual_seed(0)
    contrast = TokenContrast(hidden_size=16, projection_dim=8, vocab_size=40, momentum=0.5)
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
