"""Token-level contrastive distillation (QuantGPT / QuantBART: Tao et al., ACL 2022): the
memory bank, the InfoNCE losses and the per-layer projection heads that ``contrastive_qat``
attaches to the student while it trains.

Token-level contrastive distillation
------------------------------------
For every valid (non-pad) position ``i`` of a sequence, with token id ``t_i``:

* query ``q_i = normalize(f_s(h^s_i))``: the quantized student's hidden state at the contrasted
  layer (the **last decoder layer** by default: paper, Table 6) through a linear projection head
  ``f_s`` (paper: projections before the similarity; width ``projection_dim=128``: ours);
* positive: the full-precision **teacher's** representation of the same token at the same
  position (paper). ``positive=teacher`` (default) uses the current teacher output
  ``normalize(f_t(h^t_i))``; ``positive=bank`` uses the token's memory-bank entry (the sources do
  not say which; switch ours);
* memory bank: **one slot per vocabulary entry** (``|V| x d``, paper), sized from the model's
  embedding table, never evicted; every step, before the loss (ours: so negatives exist from the
  first step), each distinct token ``v`` of the batch with mean teacher key ``k̄_v`` (mean over
  its occurrences: ours) is folded in, ``m_v <- normalize(momentum * m_v + (1 - momentum) * k̄_v)``,
  or ``m_v = k̄_v`` when ``v`` is first seen (momentum update: paper; ``momentum=0.5``: ours);
* negatives (``negatives=``):

  - ``sequence`` (default, paper: "the other tokens of the same sequence"; its O(n²) complexity
    note only holds for in-sequence negatives): the *distinct* token ids of the same sequence
    other than ``t_i`` (a repeated token is one negative, ``t_i``'s other occurrences are none);
  - ``vocabulary_random`` (the paper's worst ablation, Table 4): ``num_random_negatives`` token
    ids drawn per sequence uniformly without replacement from the tokens the bank has seen (an
    unseen token has no teacher representation yet: ours), minus ``t_i``; 0 = as many as the
    sequence's length - 1;
  - ``bank``: every bank entry but ``t_i`` (compbench's earlier behaviour; O(n |V|), slow);

* representation of a negative token (``negative_source=``): ``teacher`` (default, paper's best
  in Table 4) = its memory-bank entry (the bank "supplies these representations for
  consistency": paper); ``student`` (Table 4's second) = the student's own projected, normalised
  hidden state at the token's first occurrence in the sequence, detached (ours: keys carry no
  gradient, as the bank's do); only with ``negatives=sequence``, the one place student states
  of the negative tokens exist;
* InfoNCE with cosine similarity and temperature ``tau`` (``contrastive_temperature=0.1``: ours)::

      l_i = -log( exp(q_i.k_i / tau) / (exp(q_i.k_i / tau) + sum_{v in N_i} exp(q_i.m_v / tau)) )

  reduced over positions by ``token_reduction=mean`` (default) or ``sum`` (sources silent;
  ours), then averaged over ``contrastive_layers``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from compbench.errors import ConfigError

NEGATIVES = ("sequence", "vocabulary_random", "bank")
NEGATIVE_SOURCES = ("teacher", "student")
POSITIVES = ("teacher", "bank")
TOKEN_REDUCTIONS = ("mean", "sum")


class TokenMemoryBank(nn.Module):
    """Momentum-averaged teacher token features, one slot per vocabulary entry (no eviction).

    Args:
        vocab_size: number of token ids (slots).
        dim: feature width.
        momentum: weight of the old entry in the momentum update (0 = replace, 1 = frozen).
    """

    def __init__(self, vocab_size: int, dim: int, momentum: float) -> None:
        super().__init__()
        self.momentum = momentum
        self.register_buffer("keys", torch.zeros(vocab_size, dim))
        self.register_buffer("filled", torch.zeros(vocab_size, dtype=torch.bool))

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
        batch_keys = F.normalize(sums, dim=-1)  # normalising the sum = normalising the mean
        seen = self.filled[unique_ids, None]
        mixed = F.normalize(self.momentum * self.keys[unique_ids] + (1 - self.momentum) * batch_keys, dim=-1)
        self.keys[unique_ids] = torch.where(seen, mixed, batch_keys)
        self.filled[unique_ids] = True

    def __len__(self) -> int:
        return int(self.filled.sum())


def _reduce(per_position: Tensor, reduction: str) -> Tensor:
    return per_position.sum() if reduction == "sum" else per_position.mean()


def first_occurrences(token_ids: Tensor, mask: Tensor) -> Tensor:
    """Bool ``[B, n]``: valid positions whose token does not occur at an earlier valid position
    of the same sequence (one representative per distinct token)."""
    n = token_ids.shape[1]
    same = token_ids[:, :, None] == token_ids[:, None, :]
    earlier = torch.ones(n, n, dtype=torch.bool, device=token_ids.device).tril(-1)
    return mask & ~(same & earlier & mask[:, None, :]).any(-1)


def sequence_contrastive_loss(
    queries: Tensor, positives: Tensor, negative_keys: Tensor, token_ids: Tensor, mask: Tensor,
    temperature: float, reduction: str = "mean",
) -> Tensor:
    """InfoNCE of each token against its positive and the other distinct tokens of its sequence.

    Args:
        queries: ``[B, n, d]`` L2-normalised student queries.
        positives: ``[B, n, d]`` L2-normalised positive keys of the same positions.
        negative_keys: ``[B, n, d]`` the key that stands for the token at each position when it is
            a negative of another position (its bank entry, or the student's representation).
        token_ids: ``[B, n]`` token id at each position.
        mask: bool ``[B, n]``, True at valid positions.
        temperature: ``tau``.
        reduction: ``mean`` or ``sum`` over valid positions.

    Returns:
        The reduced ``-log softmax`` of the positive among positive + negatives; a position with
        no negative contributes ``-log 1 = 0``.
    """
    queries, positives, negative_keys = queries.float(), positives.float(), negative_keys.float()
    positive = (queries * positives).sum(-1) / temperature  # [B, n]
    similarities = queries @ negative_keys.transpose(1, 2) / temperature  # [B, n, n]
    allowed = first_occurrences(token_ids, mask)[:, None, :] & (token_ids[:, :, None] != token_ids[:, None, :])
    similarities = similarities.masked_fill(~allowed, float("-inf"))
    logits = torch.cat([positive[..., None], similarities], dim=-1)
    per_position = torch.logsumexp(logits, dim=-1) - positive
    return _reduce(per_position[mask], reduction)


def token_contrastive_loss(
    student_q: Tensor, teacher_k: Tensor, token_ids: Tensor, bank_keys: Tensor, bank_ids: Tensor,
    temperature: float, reduction: str = "mean",
) -> Tensor:
    """InfoNCE of each token against its positive and a shared set of candidate negatives.

    Serves ``negatives=bank`` (all bank entries) and ``vocabulary_random`` (per sequence).

    Args:
        student_q: ``[n, d]`` L2-normalised student queries.
        teacher_k: ``[n, d]`` L2-normalised positive keys of the same positions.
        token_ids: ``[n]`` token id of each position.
        bank_keys: ``[m, d]`` L2-normalised candidate negatives.
        bank_ids: ``[m]`` token id of each candidate (-1 = none); a candidate with the position's
            own token id is not a negative.
        temperature: ``tau``.
        reduction: ``mean`` or ``sum`` over positions.
    """
    student_q, teacher_k, bank_keys = student_q.float(), teacher_k.float(), bank_keys.float()
    positive = (student_q * teacher_k).sum(-1, keepdim=True) / temperature  # [n, 1]
    negatives = student_q @ bank_keys.T / temperature  # [n, m]
    excluded = (bank_ids[None, :] == token_ids[:, None]) | (bank_ids[None, :] < 0)
    negatives = negatives.masked_fill(excluded, float("-inf"))
    logits = torch.cat([positive, negatives], dim=1)
    return _reduce(torch.logsumexp(logits, dim=1) - positive[:, 0], reduction)


@dataclass
class ContrastSettings:
    """The contrastive term's switches (see the module docstring)."""

    negatives: str = "sequence"
    negative_source: str = "teacher"
    positive: str = "teacher"
    temperature: float = 0.1
    token_reduction: str = "mean"
    num_random_negatives: int = 0


class TokenContrast(nn.Module):
    """Projection heads and memory bank for one contrasted layer (a training-time auxiliary).

    Args:
        hidden_size: width of the student's and the teacher's hidden states.
        projection_dim: width of the projection heads; 0 compares the hidden states directly.
        vocab_size: bank slots (one per token id).
        momentum: see ``TokenMemoryBank``.
    """

    def __init__(self, hidden_size: int, projection_dim: int, vocab_size: int, momentum: float):
        super().__init__()
        if projection_dim > 0:
            self.student_head: nn.Module = nn.Linear(hidden_size, projection_dim)
            self.teacher_head: nn.Module = nn.Linear(hidden_size, projection_dim)
        else:
            self.student_head = self.teacher_head = nn.Identity()
        self.bank = TokenMemoryBank(vocab_size, projection_dim or hidden_size, momentum)

    def forward(self, student_hidden: Tensor, teacher_hidden: Tensor, token_ids: Tensor, mask: Tensor,
                settings: ContrastSettings | float) -> Tensor:
        """Update the bank with this batch's teacher keys, then return the InfoNCE loss.

        Args:
            student_hidden: ``[batch, seq, hidden]`` student hidden states of the layer.
            teacher_hidden: ``[batch, seq, hidden]`` teacher hidden states (no grad).
            token_ids: ``[batch, seq]`` token id at each position.
            mask: bool ``[batch, seq]``, True at valid (non-pad) positions.
            settings: the switches, or just a temperature (defaults otherwise).
        """
        if not isinstance(settings, ContrastSettings):
            settings = ContrastSettings(temperature=float(settings))
        mask = mask.to(student_hidden.device, torch.bool)
        token_ids = token_ids.to(student_hidden.device)
        if not mask.any():  # a batch of only padding
            return student_hidden.new_zeros((), dtype=torch.float32)
        if int(token_ids[mask].max()) >= self.bank.keys.shape[0]:
            raise ConfigError(
                f"token id {int(token_ids[mask].max())} is outside the memory bank's "
                f"{self.bank.keys.shape[0]} slots (the model's vocabulary); check the tokenizer matches the model."
            )
        queries = F.normalize(self.student_head(student_hidden).float(), dim=-1)  # [B, n, d]
        teacher_k = F.normalize(self.teacher_head(teacher_hidden.detach()).float(), dim=-1)
        self.bank.update(token_ids[mask], teacher_k[mask])
        bank_keys = self.bank.keys
        positives = bank_keys[token_ids] if settings.positive == "bank" else teacher_k
        tau, reduction = settings.temperature, settings.token_reduction
        if settings.negatives == "sequence":
            negative_keys = queries.detach() if settings.negative_source == "student" else bank_keys[token_ids]
            return sequence_contrastive_loss(queries, positives, negative_keys, token_ids, mask, tau, reduction)
        if settings.negatives == "bank":
            ids = torch.where(self.bank.filled, torch.arange(len(bank_keys), device=bank_keys.device), -1)
            return token_contrastive_loss(queries[mask], positives[mask], token_ids[mask], bank_keys, ids, tau,
                                          reduction)
        # vocabulary_random: per sequence, a uniform sample of the tokens the bank holds.
        seen = self.bank.filled.nonzero().squeeze(1)
        count = settings.num_random_negatives or max(int(mask.sum(1).max()) - 1, 1)
        losses = []
        for row in range(token_ids.shape[0]):
            if not mask[row].any():
                continue
            sample = seen[torch.randperm(len(seen), device=seen.device)[:count]]
            losses.append(token_contrastive_loss(queries[row][mask[row]], positives[row][mask[row]],
                                                 token_ids[row][mask[row]], bank_keys[sample], sample, tau, "sum"))
        total = torch.stack(losses).sum()
        return total if reduction == "sum" else total / mask.sum()
