"""``method=qat``: quantization-aware training with straight-through estimators.

Weights (``w_bits``), word embeddings and tied output heads (``e_bits``) and the inputs of every
Linear (``a_bits``) are fake-quantized with a registered quantizer (``minmax``, ``pact``,
``lsq``, ...; see ``quantizers.py``) and trained, by default distilling the fine-tuned
full-precision teacher (Tao et al., 2022 train their QuantGPT/QuantBART students with
distillation only, hence ``kd_alpha=1``)::

    loss = kd_alpha * T^2 KL(teacher || student) + (1 - kd_alpha) * task

``finalize`` freezes the weights at their quantized values (the learned activation quantizers
stay) and rounds the remaining tensors to fp16; ``export`` writes packed codes, fp16 steps and
the activation-quantizer parameters, which reload to the same predictions. Bit-widths are
written W-E-A in the papers (8-8-8, 4-4-8, 2-2-8).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import nn

from compbench.errors import ConfigError
from compbench.methods.base import Method, MethodContext, TrainingOutputs, weight_decay_groups
from compbench.methods.distillation.losses import logit_kd_loss, output_side, valid_token_mask
from compbench.methods.quantization.packing import round_unquantized_to_fp16, save_packed_export
from compbench.methods.quantization.quantizers import (
    check_bits,
    check_group_size,
    QUANTIZERS,
    SUPPORTED_A_BITS,
    SUPPORTED_BITS,
    Quantizer,
)
from compbench.methods.quantization.quantized_modules import freeze_quantized, quantize_modules


@dataclass
class QAT(Method):
    """Quantization-aware training (STE) with optional logit distillation from the teacher.

    Attributes:
        w_bits: bit-width of Linear weights (2, 3, 4, 8).
        e_bits: bit-width of word embeddings and tied output heads (2, 3, 4, 8).
        a_bits: bit-width of Linear inputs (4, 8; 16 or 32 = not quantized).
        quantizer: registered quantizer for weights and embeddings.
        act_quantizer: registered quantizer for activations; null = same as ``quantizer``.
        group_size: input features per weight step; null = per output channel.
        distill: distil the teacher's logits (needs a fine-tuned teacher).
        kd_temperature: softmax temperature of the distillation term.
        kd_alpha: weight of the distillation term; ``1 - kd_alpha`` weighs the task loss.
        max_steps: training steps.
        lr: learning rate of the model weights.
        quantizer_lr: learning rate of learned clips/steps; null = ``lr``.
        quantizer_weight_decay: L2 decay of learned clips/steps. Default 0 (ours: decay shrinks
            the clip ranges); PACT (Choi et al., 2018) regularises ``alpha`` with L2, so set it
            > 0 to reproduce that paper's training.
    """

    name: str = "qat"
    w_bits: int = 8
    e_bits: int = 8
    a_bits: int = 8
    quantizer: str = "lsq"
    act_quantizer: str | None = None
    group_size: int | None = None
    distill: bool = True
    kd_temperature: float = 1.0
    kd_alpha: float = 1.0
    max_steps: int = 1000
    lr: float = 1e-4
    quantizer_lr: float | None = None
    quantizer_weight_decay: float = 0.0

    requires_teacher: ClassVar[bool] = True
    eff_mode: ClassVar[str] = "fake-quant"

    def __post_init__(self) -> None:
        check_bits("w_bits", self.w_bits, SUPPORTED_BITS)
        check_bits("e_bits", self.e_bits, SUPPORTED_BITS)
        check_bits("a_bits", self.a_bits, SUPPORTED_A_BITS)
        check_group_size(self.group_size)
        for field_name in ("quantizer", "act_quantizer"):
            value = getattr(self, field_name)
            if value is not None and value not in QUANTIZERS:
                raise ConfigError(f"{field_name}={value!r} is unknown; choose one of: {', '.join(sorted(QUANTIZERS))}.")
        if not self.kd_temperature > 0:
            raise ConfigError(f"kd_temperature must be > 0, got {self.kd_temperature!r}.")
        if not 0.0 <= self.kd_alpha <= 1.0:
            raise ConfigError(f"kd_alpha must be in [0, 1], got {self.kd_alpha!r}.")
        if not isinstance(self.max_steps, int) or self.max_steps < 1:
            raise ConfigError(f"max_steps must be a positive integer for QAT, got {self.max_steps!r}.")
        for field_name in ("lr", "quantizer_lr"):
            value = getattr(self, field_name)
            if value is not None and not value > 0:
                raise ConfigError(f"{field_name} must be > 0, got {value!r}.")
        if not self.quantizer_weight_decay >= 0:
            raise ConfigError(f"quantizer_weight_decay must be >= 0, got {self.quantizer_weight_decay!r}.")

    # ------------------------------------------------------------------ schedule
    @property
    def teacher_optional(self) -> bool:
        return not self.distill

    # ------------------------------------------------------------------ lifecycle
    def prepare(self, model: nn.Module, ctx: MethodContext) -> nn.Module:
        """Wrap Linear layers and word embeddings in fake-quantized modules (in place)."""
        return quantize_modules(
            model, w_bits=self.w_bits, e_bits=self.e_bits, a_bits=self.a_bits, quantizer=self.quantizer,
            act_quantizer=self.act_quantizer, per_channel=True, group_size=self.group_size,
        )

    def param_groups(self, model: nn.Module, lr: float, weight_decay: float) -> list[dict]:
        """Model weights under the one decay rule (:func:`weight_decay_groups`); learned quantizer
        parameters at ``quantizer_lr`` and ``quantizer_weight_decay``."""
        quantizer_params = {id(p): p for m in model.modules() if isinstance(m, Quantizer) for p in m.parameters()}
        weights = [p for p in model.parameters() if p.requires_grad and id(p) not in quantizer_params]
        groups = weight_decay_groups(weights, lr, weight_decay)
        learned = [p for p in quantizer_params.values() if p.requires_grad]
        if learned:
            groups.append({"params": learned, "lr": self.quantizer_lr or lr,
                           "weight_decay": self.quantizer_weight_decay})
        return groups

    def training_loss(self, out: TrainingOutputs) -> tuple[torch.Tensor, dict[str, float]]:
        """Distillation (if on and a teacher output is given) mixed with the task loss."""
        if not self.distill:
            return out.task_loss, {"loss/task": float(out.task_loss.detach())}
        if out.teacher is None:
            raise ConfigError(f"method '{self.name}' distils the teacher but got no teacher output; set distill=false or provide a teacher.")
        # Seq2seq logits are aligned with the decoder targets, the others with the inputs.
        mask = valid_token_mask(out.batch, output_side(out.student))
        kd = logit_kd_loss(out.student.logits, out.teacher.logits, self.kd_temperature, mask=mask)
        loss = self.kd_alpha * kd
        if self.kd_alpha < 1.0:
            loss = loss + (1.0 - self.kd_alpha) * out.task_loss
        return loss, {"loss/kd": float(kd.detach()), "loss/task": float(out.task_loss.detach())}

    def finalize(self, model: nn.Module, ctx: MethodContext) -> nn.Module:
        """Freeze the quantized weights; keep activation quantizers; round the rest to fp16."""
        return round_unquantized_to_fp16(freeze_quantized(model))

    def export(self, model: nn.Module, out_dir: Path, ctx: MethodContext) -> dict[str, Any]:
        """Packed codes, fp16 steps and activation-quantizer parameters (see ``packing.py``)."""
        return save_packed_export(model, out_dir, self.name, params=self.manifest_params())
