"""``method=contrastive_qat``: token-level contrastive distillation for quantized PLMs.

Building blocks of QuantGPT / QuantBART (Tao et al., ACL 2022, "Compression of Generative
Pre-trained Language Models via Quantization").

Token-level contrastive distillation, as implemented here
---------------------------------------------------------
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
distillation (Tian et al., 2020), whose momentum memory bank the paper adapts to tokens.

What is the paper's and what is ours: the same-position teacher positive, other tokens as
negatives from a momentum-updated bank of teacher token features, cosine similarity with a
temperature, the last-layer default, linear projections before the similarity and the loss
weighting (``logit KD + lambda * contrastive``, ``lambda = 0.1``) follow the paper as we read
it (the paper's text was not at hand while writing this; defaults such as ``momentum=0.5`` and
``tau=0.1`` are the usual CRD/MoCo-style values, not quoted figures). Our own choices: the
FIFO bound ``memory_size`` on the token-keyed bank, averaging a token's keys within a batch
before the momentum update, updating the bank before computing the loss (so negatives exist
from the first step), and the MSE grid initialisation of ``gamma``.

Module-wise dynamic scaling is :class:`DynamicScalingQuantizer`, registered as
the ``dynamic_scaling`` quantizer; its docstring derives the gradient of ``gamma``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from compbench.errors import ConfigError
from compbench.methods.base import MethodContext, TrainingOutputs
from compbench.methods.distill_losses import logit_kd_loss, valid_token_mask
from compbench.methods.qat import QAT
from compbench.methods.quantizers import _MIN_STEP, _LearnedQuantizer, quantize_modules, register_quantizer


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
    """Module-wise dynamic scaling (the paper's second component): clip ``alpha = gamma * mean(|w|)``.

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
    false`` quantizes weights with the plain ``quantizer`` (per output channel, as ``qat``) and
    ``contrastive: false`` drops the contrastive term, its heads and its memory bank, so each
    contribution can be ablated on its own. Every family is supported: the contrasted layer is
    the last decoder layer for GPT-2 and BART (``decoder_hidden_states``) and the last encoder
    layer for XLM-R, where "same token, same position" is just as well defined.

    Attributes (besides ``QAT``'s; ``kd_alpha`` must stay 1, the weights below replace it):
        contrastive: use the token-level contrastive term.
        dynamic_scaling: use module-wise dynamic scaling for weights and embeddings.
        contrastive_layers: indices into the (decoder) ``hidden_states`` tuple; -1 = last layer.
        contrastive_temperature: InfoNCE temperature ``tau``.
        memory_size: slots of each memory bank (distinct tokens kept).
        momentum: momentum of the memory-bank update.
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
    memory_size: int = 16384
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
        if not isinstance(self.memory_size, int) or self.memory_size < 1:
            raise ConfigError(f"memory_size must be a positive integer, got {self.memory_size!r}.")
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
        if self.dynamic_scaling:
            # Module-wise: one gamma and one mean|w| per module (per group with group_size).
            quantize_modules(
                model, w_bits=self.w_bits, e_bits=self.e_bits, a_bits=self.a_bits, quantizer="dynamic_scaling",
                act_quantizer=act_quantizer, per_channel=False, group_size=self.group_size,
            )
        else:
            quantize_modules(
                model, w_bits=self.w_bits, e_bits=self.e_bits, a_bits=self.a_bits, quantizer=self.quantizer,
                act_quantizer=act_quantizer, per_channel=True, group_size=self.group_size,
            )
        if self.contrastive:
            device = next(model.parameters()).device
            heads = nn.ModuleDict(
                {
                    str(layer): TokenContrast(
                        config.hidden_size, self.projection_dim, self.memory_size, config.vocab_size, self.momentum
                    )
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
        losses = [
            model_aux[str(layer)](student_states[layer], teacher_states[layer], token_ids, mask,
                                  self.contrastive_temperature)
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
