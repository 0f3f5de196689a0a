"""``method=contrastive_qat``: token-level contrastive distillation for quantized PLMs.

QuantGPT / QuantBART (Tao et al., ACL 2022, "Compression of Generative Pre-trained Language
Models via Quantization"). The paper's method section was not at hand; the sources are an
abstract-level summary, the caption of its method figure and its reported ablations (Tables
4-7), as quoted in compbench issue 10. Each choice below says whose it is.

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

Loss = logit distillation + ``lambda`` * contrastive, ``lambda = 0.1`` (paper). The heads and
banks are a training-time auxiliary module attached to the student in ``prepare`` and removed
in ``finalize`` (never exported), as in contrastive representation distillation (Tian et al.,
2020), whose momentum memory bank the paper adapts to tokens.

Module-wise dynamic scaling is :class:`DynamicScalingQuantizer`, registered as the
``dynamic_scaling`` quantizer; its docstring derives the gradient of ``gamma``. Its ablation
(``dynamic_scaling=false``, the paper's Table 7 "PACT's gradient") quantizes weights with the
``pact`` quantizer at the same granularity (one clip per module) and on the same symmetric grid,
starting from the same clip (``gamma_0 * mean|w|``): only the gradient (and ``alpha`` no longer
following ``mean|w|``) differs.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from compbench.devices import model_device
from compbench.errors import ConfigError
from compbench.methods.base import MethodContext, TrainingOutputs
from compbench.methods.distillation.losses import logit_kd_loss, valid_token_mask
from compbench.methods.quantization.qat import QAT
from compbench.methods.quantization.quantized_modules import QuantEmbedding, QuantLinear, quantize_modules
from compbench.methods.quantization.quantizers import DynamicScalingQuantizer, PACTQuantizer

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


# ---------------------------------------------------------------------------------- quantizer
@torch.no_grad()
def start_pact_at_dynamic_scaling_clip(model: nn.Module) -> None:
    """Set every PACT *weight* clip to the clip dynamic scaling would start from
    (``gamma_0 * mean|w|``, MSE-optimal), so the ``dynamic_scaling=false`` ablation starts where
    the full method starts (ours: the paper does not say how its PACT ablation is initialised)."""
    done: set[int] = set()
    for module in model.modules():
        if not isinstance(module, (QuantLinear, QuantEmbedding)):
            continue
        quantizer = module.weight_quantizer
        if not isinstance(quantizer, PACTQuantizer) or id(quantizer) in done:
            continue
        done.add(id(quantizer))
        reference = DynamicScalingQuantizer(quantizer.bits, per_channel=quantizer.per_channel,
                                            group_size=quantizer.group_size)
        weight = module.weight.detach().float()
        reference.init_from(weight)
        alpha = reference._alpha_of(reference.grouped(weight))
        quantizer._set_learned(alpha.reshape(quantizer.alpha.shape))


# ---------------------------------------------------------------------------------- method
#: Attribute under which the training-time heads and banks hang on the student; a submodule
#: so that Lightning moves, optimises and checkpoints them with the model. Removed in finalize.
AUX_ATTR = "compbench_contrastive"


@dataclass
class ContrastiveQAT(QAT):
    """QuantGPT / QuantBART: QAT with token-level contrastive distillation and dynamic scaling.

    Loss (the paper trains with distillation only: logit distillation plus ``lambda = 0.1``
    times the contrastive term; ``task_weight`` adds the task loss if wanted)::

        loss = logit_weight * KD_T(teacher || student) + contrastive_weight * InfoNCE + task_weight * task

    Weights and word embeddings use the ``dynamic_scaling`` quantizer, one learned ``gamma`` per
    module over the module's ``mean|w|`` as in the paper (with ``group_size``, the mean is taken
    per group); activations use ``act_quantizer`` (default: ``quantizer``). ``dynamic_scaling:
    false`` quantizes weights with the plain ``quantizer`` at the same granularity (one clip per
    module, or per group with ``group_size``); with ``pact`` (the default) that is the paper's
    Table 7 ablation, PACT's gradient on the same symmetric grid from the same initial clip.
    ``contrastive: false`` drops the contrastive term, its heads and its memory bank, so each
    contribution can be ablated on its own; ``negatives``/``negative_source`` select the paper's
    Table 4 variants. Every family is supported: the contrasted layer is
    the last decoder layer for GPT-2 and BART (``decoder_hidden_states``) and the last encoder
    layer for XLM-R, where "same token, same position" is just as well defined.

    Attributes (besides ``QAT``'s; ``kd_alpha`` must stay 1, the weights below replace it):
        contrastive: use the token-level contrastive term.
        dynamic_scaling: use module-wise dynamic scaling for weights and embeddings.
        contrastive_layers: indices into the (decoder) ``hidden_states`` tuple; -1 = last layer.
        contrastive_temperature: InfoNCE temperature ``tau``.
        negatives: ``sequence`` (paper) | ``vocabulary_random`` | ``bank``.
        negative_source: ``teacher`` (paper: bank entries) | ``student`` (with ``sequence``).
        positive: ``teacher`` (current teacher output) | ``bank`` (the token's bank entry).
        token_reduction: ``mean`` | ``sum`` of the per-token losses.
        num_random_negatives: tokens drawn per sequence for ``vocabulary_random``; 0 = the
            sequence length - 1.
        momentum: momentum of the memory-bank update (the bank has one slot per vocabulary entry).
        projection_dim: width of the linear projection heads; 0 = no heads.
        logit_weight: weight of the logit distillation term.
        contrastive_weight: weight of the contrastive term (the paper's ``lambda``).
        task_weight: weight of the task loss.
    """

    name: str = "contrastive_qat"
    w_bits: int = 2
    e_bits: int = 2
    a_bits: int = 8
    quantizer: str = "pact"
    contrastive: bool = True
    dynamic_scaling: bool = True
    contrastive_layers: list[int] = field(default_factory=lambda: [-1])
    contrastive_temperature: float = 0.1
    negatives: str = "sequence"
    negative_source: str = "teacher"
    positive: str = "teacher"
    token_reduction: str = "mean"
    num_random_negatives: int = 0
    momentum: float = 0.5
    projection_dim: int = 128
    logit_weight: float = 1.0
    contrastive_weight: float = 0.1
    task_weight: float = 0.0

    def __post_init__(self) -> None:
        super().__post_init__()
        if not self.distill:
            raise ConfigError("contrastive_qat always distils the teacher; drop distill=false or use method=qat.")
        if self.kd_alpha != 1.0:
            raise ConfigError(
                "contrastive_qat weighs its terms with logit_weight, contrastive_weight and task_weight; "
                "leave kd_alpha at 1."
            )
        if self.act_quantizer == "dynamic_scaling":
            raise ConfigError(
                "dynamic_scaling scales weights by their mean |w| and is not an activation quantizer; "
                "set act_quantizer to pact, lsq or minmax."
            )
        layers = list(self.contrastive_layers) if isinstance(self.contrastive_layers, (list, tuple)) else None
        if not layers or not all(isinstance(layer, int) for layer in layers):
            raise ConfigError(
                f"contrastive_layers must be a non-empty list of hidden-state indices, got {self.contrastive_layers!r}."
            )
        if len(set(layers)) != len(layers):
            raise ConfigError(f"contrastive_layers has repeated indices {layers}; list each layer once.")
        self.contrastive_layers = layers
        if not self.contrastive_temperature > 0:
            raise ConfigError(f"contrastive_temperature must be > 0, got {self.contrastive_temperature!r}.")
        for name, options in (("negatives", NEGATIVES), ("negative_source", NEGATIVE_SOURCES),
                              ("positive", POSITIVES), ("token_reduction", TOKEN_REDUCTIONS)):
            if getattr(self, name) not in options:
                raise ConfigError(f"{name}={getattr(self, name)!r} is unknown; choose one of: {', '.join(options)}.")
        if self.negative_source == "student" and self.negatives != "sequence":
            raise ConfigError(
                f"negative_source=student needs negatives=sequence (student states exist only for the "
                f"sequence's own tokens), got negatives={self.negatives!r}."
            )
        if not isinstance(self.num_random_negatives, int) or self.num_random_negatives < 0:
            raise ConfigError(
                f"num_random_negatives must be a non-negative integer (0 = sequence length - 1), "
                f"got {self.num_random_negatives!r}."
            )
        if not 0.0 <= self.momentum < 1.0:
            raise ConfigError(f"momentum must be in [0, 1), got {self.momentum!r}.")
        if not isinstance(self.projection_dim, int) or self.projection_dim < 0:
            raise ConfigError(
                f"projection_dim must be a non-negative integer (0 = no heads), got {self.projection_dim!r}."
            )
        for weight_name in ("logit_weight", "contrastive_weight", "task_weight"):
            if getattr(self, weight_name) < 0:
                raise ConfigError(f"{weight_name} must be >= 0, got {getattr(self, weight_name)!r}.")
        if self.logit_weight + self.task_weight + (self.contrastive_weight if self.contrastive else 0.0) == 0:
            raise ConfigError("every loss weight is 0; set logit_weight, contrastive_weight or task_weight > 0.")
        self._family = "decoder"
        self._pad_token_id: int | None = None
        self._decoder_start_token_id: int | None = None
        self._aux_ref: nn.ModuleDict | None = None

    # ------------------------------------------------------------------ description
    @property
    def needs_hidden_states(self) -> bool:  # type: ignore[override]
        """Hidden states are only needed (and only requested) for the contrastive term."""
        return self.contrastive

    @property
    def _aux(self) -> nn.ModuleDict | None:
        """The heads and banks attached to the student by ``prepare`` (None before/after training)."""
        return self._aux_ref

    def row_params(self) -> dict[str, Any]:
        params = super().row_params()
        params.pop("kd_alpha")  # fixed at 1 and replaced by the three loss weights
        return params

    # ------------------------------------------------------------------ lifecycle
    def prepare(self, model: nn.Module, ctx: MethodContext) -> nn.Module:
        """Fake-quantize (dynamic scaling or the plain quantizer) and attach the contrastive heads."""
        self._family = ctx.family
        self._mask_side = "target" if ctx.family == "encoder_decoder" else "input"
        config = model.config
        self._pad_token_id = config.pad_token_id
        self._decoder_start_token_id = getattr(config, "decoder_start_token_id", None)
        if self.contrastive:
            num_states = (config.decoder_layers if ctx.family == "encoder_decoder" else config.num_hidden_layers) + 1
            bad = [layer for layer in self.contrastive_layers if not -num_states <= layer < num_states]
            if bad:
                raise ConfigError(
                    f"contrastive_layers {bad} are out of range for a model with {num_states} hidden states "
                    f"(embeddings + {num_states - 1} layers); use indices in [-{num_states}, {num_states - 1}]."
                )
        act_quantizer = self.act_quantizer or self.quantizer
        # Module-wise either way: one clip per module (per group with group_size), so that the
        # dynamic_scaling=false ablation changes the gradient only (paper, Table 7).
        quantize_modules(
            model, w_bits=self.w_bits, e_bits=self.e_bits, a_bits=self.a_bits,
            quantizer="dynamic_scaling" if self.dynamic_scaling else self.quantizer,
            act_quantizer=act_quantizer, per_channel=False, group_size=self.group_size,
        )
        if not self.dynamic_scaling:
            start_pact_at_dynamic_scaling_clip(model)
        if self.contrastive:
            device = model_device(model)
            # One bank slot per token id: the embedding table's rows (>= config.vocab_size when
            # the table was padded), so no token is ever evicted.
            vocab = max(int(config.vocab_size), model.get_input_embeddings().weight.shape[0])
            heads = nn.ModuleDict(
                {
                    str(layer): TokenContrast(config.hidden_size, self.projection_dim, vocab, self.momentum)
                    for layer in self.contrastive_layers
                }
            ).to(device)
            setattr(model, AUX_ATTR, heads)
            self._aux_ref = heads
        return model

    def _token_ids(self, batch: dict[str, Tensor]) -> Tensor:
        """Token id at each position of the contrasted hidden states."""
        if self._family != "encoder_decoder":
            return batch["input_ids"]
        if "decoder_input_ids" in batch:
            return batch["decoder_input_ids"]
        # What BART feeds its decoder when only labels are given.
        from transformers.models.bart.modeling_bart import shift_tokens_right

        return shift_tokens_right(batch["labels"], self._pad_token_id, self._decoder_start_token_id)

    def _hidden_states(self, output: Any) -> tuple[Tensor, ...]:
        states = output.decoder_hidden_states if self._family == "encoder_decoder" else output.hidden_states
        if states is None:
            raise ConfigError(
                "contrastive_qat got no hidden states; forward the student and teacher with "
                "output_hidden_states=method.needs_hidden_states."
            )
        return states

    def contrastive_loss(self, model_aux: nn.ModuleDict, out: TrainingOutputs) -> Tensor:
        """Token-level InfoNCE averaged over ``contrastive_layers`` (updates the memory banks)."""
        mask = valid_token_mask(out.batch, self._mask_side)
        token_ids = self._token_ids(out.batch)
        student_states, teacher_states = self._hidden_states(out.student), self._hidden_states(out.teacher)
        settings = ContrastSettings(
            negatives=self.negatives, negative_source=self.negative_source, positive=self.positive,
            temperature=self.contrastive_temperature, token_reduction=self.token_reduction,
            num_random_negatives=self.num_random_negatives,
        )
        losses = [
            model_aux[str(layer)](student_states[layer], teacher_states[layer], token_ids, mask, settings)
            for layer in self.contrastive_layers
        ]
        return torch.stack(losses).mean()

    def training_loss(self, out: TrainingOutputs) -> tuple[Tensor, dict[str, float]]:
        """``logit_weight * KD + contrastive_weight * InfoNCE + task_weight * task``."""
        if out.teacher is None:
            raise ConfigError("contrastive_qat needs the teacher's outputs at every step; run it with a teacher.")
        mask = valid_token_mask(out.batch, self._mask_side)
        kd = logit_kd_loss(out.student.logits, out.teacher.logits, self.kd_temperature, mask=mask)
        loss = self.logit_weight * kd
        logs = {"loss/kd": float(kd.detach())}
        if self.contrastive:
            aux = self._aux
            if aux is None:
                raise ConfigError("contrastive_qat.training_loss was called before prepare(); prepare the model first.")
            contrast = self.contrastive_loss(aux, out)
            loss = loss + self.contrastive_weight * contrast
            logs["loss/contrastive"] = float(contrast.detach())
        if self.task_weight > 0:
            loss = loss + self.task_weight * out.task_loss
        logs["loss/task"] = float(out.task_loss.detach())
        return loss, logs

    def finalize(self, model: nn.Module, ctx: MethodContext) -> nn.Module:
        """Drop the heads and memory banks (training-only), then freeze as ``qat``."""
        if hasattr(model, AUX_ATTR):
            delattr(model, AUX_ATTR)
        self._aux_ref = None
        return super().finalize(model, ctx)

    def export(self, model: nn.Module, out_dir: Path, ctx: MethodContext) -> dict[str, Any]:
        """``qat``'s packed export; refuses a model that still carries the training-only heads."""
        if hasattr(model, AUX_ATTR):
            raise ConfigError("contrastive_qat.export got a model that was not finalized; call finalize() first.")
        return super().export(model, out_dir, ctx)
