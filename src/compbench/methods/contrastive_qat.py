"""``method=contrastive_qat``: token-level contrastive distillation for quantized PLMs.

Building blocks of QuantGPT / QuantBART (Tao et al., ACL 2022, "Compression of Generative
Pre-trained Language Models via Quantization").

Token-level contrastive distillation (paper §3.2), as implemented here
---------------------------------------------------------------------
For every valid (non-pad) position ``i`` of a sequence, with token id ``t_i``:

* ``q_i = normalize(f_s(h^s_i))``: the quantized student's hidden state at position ``i`` of
  the chosen layer (the last decoder layer by default), through a learned linear projection
  head ``f_s``;
* ``k_i = normalize(f_t(h^t_i))``: the full-precision teacher's hidden state at the *same
  position of the same sequence* through its own learned linear head ``f_t`` -- the positive;
* a memory bank of teacher token features keyed by token id: slot ``j`` holds
  ``(id_j, m_j)``. Each step the bank is first updated with this batch's (detached) teacher
  keys: for every distinct token ``v`` of the batch with mean key ``k̄_v``,
  ``m_v <- normalize(momentum * m_v + (1 - momentum) * k̄_v)`` if ``v`` is in the bank, else
  ``v`` is enqueued with ``m_v = k̄_v`` into the oldest slot (FIFO: the oldest token is
  dequeued when the bank is full). With ``memory_size`` >= vocabulary size this is exactly the
  paper's ``|V| x d`` bank of momentum-averaged teacher token representations; a smaller
  ``memory_size`` bounds its memory;
* negatives of position ``i``: every bank entry whose token id differs from ``t_i`` (the
  current batch's other tokens included, since the bank was just updated with them);
* InfoNCE with cosine similarity and temperature ``tau``::

      l_i = -log( exp(q_i.k_i / tau) / (exp(q_i.k_i / tau) + sum_{j: id_j != t_i} exp(q_i.m_j / tau)) )

  averaged over the valid positions (and over ``contrastive_layers``).

The heads and the memory bank are a training-time auxiliary module attached to the student in
``prepare`` and removed in ``finalize`` (never exported), as in contrastive representation
distillation (Tian et al., 2020), from which the paper borrows the momentum memory bank.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from compbench.methods.quantizers import _MIN_STEP, _LearnedQuantizer, register_quantizer


class TokenMemoryBank(nn.Module):
    """A bank of momentum-averaged teacher token features keyed by token id (FIFO eviction).

    Args:
        memory_size: number of slots (distinct tokens kept).
        dim: feature width.
        vocab_size: size of the token-id space (for the id -> slot lookup table).
        momentum: weight of the old entry in the momentum update (0 = replace, 1 = frozen).
    """

    def __init__(self, memory_size: int, dim: int, vocab_size: int, momentum: float) -> None:
        super().__init__()
        self.memory_size = memory_size
        self.momentum = momentum
        self.register_buffer("keys", torch.zeros(memory_size, dim))
        # -1 marks an empty slot / a token that is not in the bank.
        self.register_buffer("ids", torch.full((memory_size,), -1, dtype=torch.long))
        self.register_buffer("slot_of_id", torch.full((vocab_size,), -1, dtype=torch.long))
        # Next slot to (over)write: slots are filled and evicted in insertion order.
        self.register_buffer("ptr", torch.zeros((), dtype=torch.long))

    @torch.no_grad()
    def update(self, token_ids: Tensor, keys: Tensor) -> None:
        """Fold a batch of teacher keys into the bank.

        Args:
            token_ids: ``[n]`` token ids of the valid positions.
            keys: ``[n, dim]`` L2-normalised teacher keys of those positions.
        """
        keys = keys.detach().to(self.keys.dtype)
        unique_ids, inverse = torch.unique(token_ids, return_inverse=True)
        # Mean key of each distinct token of the batch (a token seen twice contributes once).
        sums = keys.new_zeros(len(unique_ids), keys.shape[1]).index_add_(0, inverse, keys)
        counts = torch.bincount(inverse, minlength=len(unique_ids)).to(keys.dtype)
        batch_keys = F.normalize(sums / counts[:, None], dim=-1)

        slots = self.slot_of_id[unique_ids]
        present = slots >= 0
        old_slots = slots[present]
        mixed = self.momentum * self.keys[old_slots] + (1 - self.momentum) * batch_keys[present]
        self.keys[old_slots] = F.normalize(mixed, dim=-1)

        new_ids, new_keys = unique_ids[~present], batch_keys[~present]
        if len(new_ids) > self.memory_size:  # more new tokens than slots: keep the last ones
            new_ids, new_keys = new_ids[-self.memory_size :], new_keys[-self.memory_size :]
        if len(new_ids) == 0:
            return
        new_slots = (self.ptr + torch.arange(len(new_ids), device=new_ids.device)) % self.memory_size
        evicted = self.ids[new_slots]
        self.slot_of_id[evicted[evicted >= 0]] = -1
        self.ids[new_slots] = new_ids
        self.keys[new_slots] = new_keys
        self.slot_of_id[new_ids] = new_slots
        self.ptr.copy_((self.ptr + len(new_ids)) % self.memory_size)

    def __len__(self) -> int:
        return int((self.ids >= 0).sum())


def token_contrastive_loss(
    student_q: Tensor, teacher_k: Tensor, token_ids: Tensor, bank_keys: Tensor, bank_ids: Tensor, temperature: float
) -> Tensor:
    """InfoNCE of each student token against its teacher positive and the bank's other tokens.

    Args:
        student_q: ``[n, d]`` L2-normalised student queries (one per valid position).
        teacher_k: ``[n, d]`` L2-normalised teacher keys of the same positions (the positives).
        token_ids: ``[n]`` token id of each position.
        bank_keys: ``[m, d]`` L2-normalised memory-bank features.
        bank_ids: ``[m]`` token id of each bank slot (-1 = empty).
        temperature: InfoNCE temperature ``tau``.

    Returns:
        The mean over positions of ``-log softmax`` of the positive among positive + negatives;
        a position with no negative contributes ``-log 1 = 0``.
    """
    student_q, teacher_k, bank_keys = student_q.float(), teacher_k.float(), bank_keys.float()
    positive = (student_q * teacher_k).sum(-1, keepdim=True) / temperature  # [n, 1]
    negatives = student_q @ bank_keys.T / temperature  # [n, m]
    # Same token (its own momentum entry is not a negative) and empty slots are excluded.
    excluded = (bank_ids[None, :] == token_ids[:, None]) | (bank_ids[None, :] < 0)
    negatives = negatives.masked_fill(excluded, float("-inf"))
    logits = torch.cat([positive, negatives], dim=1)
    return (torch.logsumexp(logits, dim=1) - positive[:, 0]).mean()


class TokenContrast(nn.Module):
    """Projection heads and memory bank for one contrasted layer (a training-time auxiliary).

    Args:
        hidden_size: width of the student's and the teacher's hidden states.
        projection_dim: width of the projection heads; 0 compares the hidden states directly.
        memory_size, vocab_size, momentum: see ``TokenMemoryBank``.
    """

    def __init__(self, hidden_size: int, projection_dim: int, memory_size: int, vocab_size: int, momentum: float):
        super().__init__()
        if projection_dim > 0:
            self.student_head: nn.Module = nn.Linear(hidden_size, projection_dim)
            self.teacher_head: nn.Module = nn.Linear(hidden_size, projection_dim)
        else:
            self.student_head = self.teacher_head = nn.Identity()
        self.bank = TokenMemoryBank(memory_size, projection_dim or hidden_size, vocab_size, momentum)

    def forward(
        self, student_hidden: Tensor, teacher_hidden: Tensor, token_ids: Tensor, mask: Tensor, temperature: float
    ) -> Tensor:
        """Update the bank with this batch's teacher keys, then return the InfoNCE loss.

        Args:
            student_hidden: ``[batch, seq, hidden]`` student hidden states of the layer.
            teacher_hidden: ``[batch, seq, hidden]`` teacher hidden states (no grad).
            token_ids: ``[batch, seq]`` token id at each position.
            mask: bool ``[batch, seq]``, True at valid (non-pad) positions.
            temperature: InfoNCE temperature.
        """
        mask = mask.to(student_hidden.device, torch.bool)
        ids = token_ids.to(student_hidden.device)[mask]
        if ids.numel() == 0:  # a batch of only padding
            return student_hidden.new_zeros((), dtype=torch.float32)
        student_q = F.normalize(self.student_head(student_hidden[mask]).float(), dim=-1)
        teacher_k = F.normalize(self.teacher_head(teacher_hidden[mask].detach()).float(), dim=-1)
        self.bank.update(ids, teacher_k)
        return token_contrastive_loss(student_q, teacher_k, ids, self.bank.keys, self.bank.ids, temperature)


# ---------------------------------------------------------------------------------- quantizer
#: Candidate clip factors (alpha / mean|w|) tried when initialising gamma; 2-bit optima of
#: Gaussian/Laplacian weights lie near 1.2-2 (TWN's threshold 0.7 mean|w| gives alpha ~= 1.4
#: mean|w|), 8-bit optima near the max, so the grid spans up to max|w| / mean|w|.
_GAMMA_GRID = 96
#: Elements used for the gamma search: a strided subsample keeps prepare() fast on large
#: embeddings (GPT-2's wte has 38.6M weights) without changing the optimum noticeably.
_GAMMA_INIT_MAX_ELEMENTS = 1 << 20


@register_quantizer("dynamic_scaling")
class DynamicScalingQuantizer(_LearnedQuantizer):
    """Module-wise dynamic scaling (paper §3.3): clip ``alpha = gamma * mean(|w|)``.

    ``gamma`` is one learned scalar per quantized module, so the clip follows the weights'
    changing scale during training (``mean|w|`` is recomputed every forward) while ``gamma``
    adapts it to the module. With ``per_channel``/``group_size`` the mean is taken per row/group
    and ``gamma`` stays shared by the module. Levels are the paper's symmetric ones,
    ``q = alpha * round(k * clip(w, -alpha, alpha) / alpha) / k`` with ``k = 2**(b-1) - 1``
    (2-bit = ternary ``{-alpha, 0, alpha}``, the paper's setting), i.e. ``step = alpha / k``.

    Gradient (what autograd computes here, and the paper's): with ``u = w / alpha``,
    ``dq/dalpha = round(k u) / k - u`` for ``|w| < alpha`` (weights *inside* the clip, the
    quantization-error term PACT lacks) and ``sign(w)`` for ``|w| >= alpha`` (weights outside),
    so ``dL/dgamma = mean(|w|) * sum_i dL/dq_i * dq_i/dalpha``. ``mean|w|`` is detached: the
    gradient w.r.t. ``w`` is the plain STE (1 inside the clip, 0 outside), as in the paper.

    ``gamma`` is initialised by a grid search minimising ``||q(w) - w||^2`` (the clip that
    best represents the pretrained weights at this bit-width), so training starts from a
    sensible clip rather than the max, which at 2 bits would round most weights to zero.
    """

    param_name = "gamma"

    def __init__(self, bits: int, **kwargs):
        super().__init__(bits, **kwargs)
        # Symmetric levels [-k, k] (the base class's signed range has one extra negative code).
        self.qmin, self.qmax = -(2 ** (bits - 1) - 1), 2 ** (bits - 1) - 1
        self.half_levels = float(self.qmax)
        self._alpha: Tensor | None = None

    def _alpha_of(self, xg: Tensor) -> Tensor:
        mean_abs = xg.detach().abs().mean(dim=-1, keepdim=True).clamp_min(_MIN_STEP)
        return (self.gamma.abs() * mean_abs).clamp_min(_MIN_STEP)

    @torch.no_grad()
    def init_grouped(self, xg: Tensor) -> None:
        """``gamma`` = the MSE-optimal clip factor over a grid (see class docstring)."""
        sample = xg.float().reshape(-1, 1, xg.shape[-1])  # (rows, 1, group_len)
        stride = math.ceil(sample.numel() / _GAMMA_INIT_MAX_ELEMENTS)
        if stride > 1:  # keep whole rows when there are many, else every stride-th element
            sample = sample[::stride] if sample.shape[0] >= stride else sample[..., ::stride]
        mean_abs = sample.abs().mean(dim=-1, keepdim=True).clamp_min(_MIN_STEP)
        top = float((sample.abs() / mean_abs).amax())
        best_gamma, best_err = top, float("inf")
        for gamma in torch.linspace(top / _GAMMA_GRID, top, _GAMMA_GRID).tolist():
            alpha = gamma * mean_abs
            step = alpha / self.qmax
            quantized = torch.clamp(torch.round(sample.clamp(-alpha, alpha) / step), self.qmin, self.qmax) * step
            err = float((quantized - sample).pow(2).sum())
            if err < best_err:
                best_gamma, best_err = gamma, err
        self._set_learned(torch.full((1, 1, 1), best_gamma))

    def clip_grouped(self, xg: Tensor) -> Tensor:
        self._ensure_init(xg)
        # The base class calls clip_grouped then scale_and_zero on the clipped tensor; alpha
        # needs mean|w| of the *unclipped* weights, so it is computed here and kept for the step.
        self._alpha = self._alpha_of(xg)
        return torch.minimum(torch.maximum(xg, -self._alpha), self._alpha)

    def scale_and_zero(self, xg: Tensor) -> tuple[Tensor, Tensor]:
        alpha = self._alpha if self._alpha is not None else self._alpha_of(xg)
        self._alpha = None
        step = alpha / self.qmax
        return step, torch.zeros_like(step)
