"""Distillation losses shared by ``kd`` and the contrastive QAT method.

Conventions:
    * ``mask`` is a bool tensor ``[batch, seq]`` that is True where a position counts; every
      loss is a mean over those positions, so padding never dilutes or pollutes the loss.
    * ``layer_map`` pairs are ``(student_layer, teacher_layer)``, 0-based indices of transformer
      blocks. Block ``i``'s output is ``hidden_states[i + 1]`` in an HF output (index 0 is the
      embedding output) and its attention map is ``attentions[i]``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def _masked_mean(per_position: Tensor, mask: Tensor | None) -> Tensor:
    """Mean of ``per_position`` ([batch, seq]) over the True positions of ``mask``."""
    if mask is None:
        return per_position.mean()
    mask = mask.to(device=per_position.device, dtype=torch.bool)
    if mask.shape != per_position.shape:
        raise ValueError(f"mask shape {tuple(mask.shape)} does not match positions {tuple(per_position.shape)}")
    # clamp: an all-False mask gives 0, not NaN (a batch of only padding contributes nothing).
    return (per_position * mask).sum() / mask.sum().clamp_min(1)


def _position_weights(mask: Tensor | None, positions: torch.Size, device: torch.device) -> Tensor:
    """Weight of each position in ``_masked_mean`` (``mask / count``, or ``1 / n`` without a mask)."""
    if mask is None:
        return torch.full(positions, 1.0 / max(positions.numel(), 1), device=device)
    mask = mask.to(device=device, dtype=torch.bool)
    if mask.shape != positions:
        raise ValueError(f"mask shape {tuple(mask.shape)} does not match positions {tuple(positions)}")
    return mask.float() / mask.sum().clamp_min(1)


class _SoftTargetKL(torch.autograd.Function):
    """``T^2 * sum_positions weight * KL(softmax(t / T) || softmax(s / T))`` with its gradient
    written out: ``d/ds = T * weight * (softmax(s / T) - softmax(t / T))``.

    The same value and gradient as autograd through ``log_softmax`` + ``kl_div`` (to float
    rounding), but it keeps two vocabulary-sized tensors instead of autograd's chain of
    temporaries (the division by T, ``exp``, ``sub``, ``mul``, and their backward passes). At a
    small hidden size and a large vocabulary those passes over ``[batch, seq, vocab]`` dominate a
    QAT step: measured with torch.profiler on tiny_gpt2 at 8 x 512 (vocab 2000), this halved
    the loss's forward + backward time (ours: an implementation detail, not a method choice).
    The teacher logits get no gradient (the teacher is frozen; ``logit_kd_loss`` falls back to
    autograd when they require one).
    """

    @staticmethod
    def forward(ctx, student_logits: Tensor, teacher_logits: Tensor, weights: Tensor, temperature: float) -> Tensor:
        student, teacher = student_logits.float(), teacher_logits.float()
        if temperature != 1.0:
            student, teacher = student / temperature, teacher / temperature
        student_log_probs = F.log_softmax(student, dim=-1)
        teacher_log_probs = F.log_softmax(teacher, dim=-1)
        teacher_probs = teacher_log_probs.exp()
        # KL per position, in place on the teacher's log-probabilities (no longer needed).
        per_position = teacher_log_probs.sub_(student_log_probs).mul_(teacher_probs).sum(-1)
        ctx.save_for_backward(student_log_probs, teacher_probs, weights)
        ctx.temperature = temperature
        ctx.student_dtype = student_logits.dtype
        return (per_position * weights).sum() * temperature**2

    @staticmethod
    def backward(ctx, grad_output: Tensor):
        student_log_probs, teacher_probs, weights = ctx.saved_tensors
        scale = (weights * (grad_output * ctx.temperature)).unsqueeze(-1)
        grad = student_log_probs.exp().sub_(teacher_probs).mul_(scale)
        return grad.to(ctx.student_dtype), None, None, None


def logit_kd_loss(
    student_logits: Tensor, teacher_logits: Tensor, temperature: float, mask: Tensor | None = None
) -> Tensor:
    """Soft-target distillation loss of Hinton et al. (2015).

    ``KL(softmax(teacher / T) || softmax(student / T)) * T^2``, summed over classes and averaged
    over valid positions. The ``T^2`` keeps gradient magnitudes comparable across temperatures.

    Args:
        student_logits: ``[..., classes]`` (e.g. ``[batch, seq, vocab]``).
        teacher_logits: same shape as ``student_logits``.
        temperature: softening temperature ``T > 0``.
        mask: bool ``[...]`` (the logits' shape without the class dim); True = position counts.
    """
    if student_logits.shape != teacher_logits.shape:
        raise ValueError(
            f"student logits {tuple(student_logits.shape)} and teacher logits "
            f"{tuple(teacher_logits.shape)} differ in shape"
        )
    if teacher_logits.requires_grad and torch.is_grad_enabled():
        # A teacher that is itself trained: plain autograd, so it gets its gradient too.
        student_log_probs = F.log_softmax(student_logits.float() / temperature, dim=-1)
        teacher_log_probs = F.log_softmax(teacher_logits.float() / temperature, dim=-1)
        per_position = F.kl_div(student_log_probs, teacher_log_probs, reduction="none", log_target=True).sum(-1)
        return _masked_mean(per_position, mask) * temperature**2
    weights = _position_weights(mask, student_logits.shape[:-1], student_logits.device)
    return _SoftTargetKL.apply(student_logits, teacher_logits, weights, float(temperature))


def hidden_state_loss(
    student_hidden: Sequence[Tensor],
    teacher_hidden: Sequence[Tensor],
    layer_map: Sequence[tuple[int, int]],
    mask: Tensor | None = None,
    projection: nn.ModuleList | None = None,
) -> Tensor:
    """Mean squared error between mapped student and teacher block outputs.

    Args:
        student_hidden: the student's ``hidden_states`` (embeddings first, then one per block).
        teacher_hidden: the teacher's ``hidden_states``.
        layer_map: ``(student_layer, teacher_layer)`` block indices, 0-based.
        mask: bool ``[batch, seq]``; True = position counts.
        projection: one module per ``layer_map`` entry mapping student width to teacher width
            (needed when the widths differ), or None.

    Returns:
        The MSE (mean over hidden units and valid positions), averaged over the mapped pairs.
    """
    if not layer_map:
        raise ValueError("hidden_state_loss needs a non-empty layer_map")
    if projection is not None and len(projection) != len(layer_map):
        raise ValueError(f"{len(projection)} projections for {len(layer_map)} mapped layers")
    total = student_hidden[0].new_zeros((), dtype=torch.float32)
    for pair_idx, (student_layer, teacher_layer) in enumerate(layer_map):
        student = student_hidden[student_layer + 1]
        if projection is not None:
            student = projection[pair_idx](student)
        teacher = teacher_hidden[teacher_layer + 1]
        per_position = (student.float() - teacher.float()).pow(2).mean(-1)
        total = total + _masked_mean(per_position, mask)
    return total / len(layer_map)


def attention_loss(
    student_attn: Sequence[Tensor],
    teacher_attn: Sequence[Tensor],
    layer_map: Sequence[tuple[int, int]],
    mask: Tensor | None = None,
) -> Tensor:
    """Squared error between mapped student and teacher attention maps (TinyBERT-style).

    HF returns attention probabilities ``[batch, heads, query, key]``; the squared error is
    summed over keys (one attention distribution per query), averaged over heads and valid query
    positions, then over mapped pairs. Summing over keys keeps the scale independent of the
    sequence length. Head counts must match (there is no natural map between heads otherwise).

    Args:
        student_attn: the student's ``attentions`` (one per block).
        teacher_attn: the teacher's ``attentions``.
        layer_map: ``(student_layer, teacher_layer)`` block indices, 0-based.
        mask: bool ``[batch, seq]`` over query positions; True = position counts.
    """
    if not layer_map:
        raise ValueError("attention_loss needs a non-empty layer_map")
    total = student_attn[0].new_zeros((), dtype=torch.float32)
    for student_layer, teacher_layer in layer_map:
        student, teacher = student_attn[student_layer], teacher_attn[teacher_layer]
        if student.shape != teacher.shape:
            raise ValueError(
                f"attention maps differ in shape: student {tuple(student.shape)}, teacher {tuple(teacher.shape)}"
            )
        per_position = (student.float() - teacher.float()).pow(2).sum(-1).mean(1)  # [batch, query]
        total = total + _masked_mean(per_position, mask)
    return total / len(layer_map)


def output_side(output: Any) -> str:
    """The :func:`valid_token_mask` side a model output's logits follow: ``target`` for a seq2seq
    output (its logits and ``decoder_hidden_states`` follow the decoder), else ``input``."""
    return "target" if hasattr(output, "decoder_hidden_states") else "input"


def valid_token_mask(batch: Mapping[str, Tensor], side: str = "input") -> Tensor:
    """Bool ``[batch, seq]`` mask of positions that count in a distillation loss.

    Args:
        batch: model inputs (``input_ids``, ``attention_mask``, ``labels``, ...).
        side: ``input`` for positions aligned with ``input_ids`` (encoder and decoder-only
            logits/hidden states; uses ``attention_mask``: every real token carries teacher
            knowledge, even where the task label is -100), or ``target`` for positions aligned
            with the decoder of a seq2seq model (``decoder_attention_mask``, else
            ``labels != -100``).
    """
    if side == "input":
        if "attention_mask" in batch:
            return batch["attention_mask"].bool()
        return torch.ones_like(batch["input_ids"], dtype=torch.bool)
    if side == "target":
        if "decoder_attention_mask" in batch:
            return batch["decoder_attention_mask"].bool()
        if "labels" in batch:
            return batch["labels"] != -100
        return torch.ones_like(batch["decoder_input_ids"], dtype=torch.bool)
    raise ValueError(f"side must be 'input' or 'target', got {side!r}")
