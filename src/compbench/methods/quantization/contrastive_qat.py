"""``method=contrastive_qat``: token-level contrastive distillation for quantized PLMs.

QuantGPT / QuantBART (Tao et al., ACL 2022, "Compression of Generative Pre-trained Language
Models via Quantization"). The paper's method section was not at hand; the sources are an
abstract-level summary, the caption of its method figure and its reported ablations (Tables
4-7), as quoted in compbench issue 10. Each choice below says whose it is.

The token-level contrastive term (queries, positives, the vocabulary-sized memory bank,
negatives, InfoNCE; each choice with its source) is ``compbench.methods.distillation.contrastive``.

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
from torch import Tensor, nn

from compbench.devices import model_device
from compbench.errors import ConfigError
from compbench.methods.base import MethodContext, TrainingOutputs
from compbench.methods.distillation.contrastive import (
    NEGATIVE_SOURCES,
    NEGATIVES,
    POSITIVES,
    TOKEN_REDUCTIONS,
    ContrastSettings,
    TokenContrast,
)
from compbench.methods.distillation.losses import logit_kd_loss, output_side, valid_token_mask
from compbench.methods.quantization.qat import QAT
from compbench.methods.quantization.quantized_modules import QuantEmbedding, QuantLinear, quantize_modules
from compbench.methods.quantization.quantizers import DynamicScalingQuantizer, PACTQuantizer

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


class ContrastiveAuxiliaries(nn.ModuleDict):
    """The training-time state ``prepare`` attaches to the student (under :data:`AUX_ATTR`): one
    :class:`TokenContrast` per contrasted layer (key: the layer index), and the token ids a
    seq2seq decoder starts from (to rebuild its inputs from the labels). Run state lives here,
    on the model, never on the method's config object."""

    def __init__(self, contrasts: dict[str, nn.Module], pad_token_id: int | None,
                 decoder_start_token_id: int | None) -> None:
        super().__init__(contrasts)
        self.pad_token_id, self.decoder_start_token_id = pad_token_id, decoder_start_token_id


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
    # The contrastive term's switches: their defaults' one home is ContrastSettings.
    contrastive_temperature: float = ContrastSettings.temperature
    negatives: str = ContrastSettings.negatives
    negative_source: str = ContrastSettings.negative_source
    positive: str = ContrastSettings.positive
    token_reduction: str = ContrastSettings.token_reduction
    num_random_negatives: int = ContrastSettings.num_random_negatives
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

    # ------------------------------------------------------------------ description
    @property
    def needs_hidden_states(self) -> bool:  # type: ignore[override]
        """Hidden states are only needed (and only requested) for the contrastive term."""
        return self.contrastive

    def row_params(self) -> dict[str, Any]:
        params = super().row_params()
        params.pop("kd_alpha")  # fixed at 1 and replaced by the three loss weights
        return params

    # ------------------------------------------------------------------ lifecycle
    def prepare(self, model: nn.Module, ctx: MethodContext) -> nn.Module:
        """Fake-quantize (dynamic scaling or the plain quantizer) and attach the contrastive heads."""
        config = model.config
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
            heads = ContrastiveAuxiliaries(
                {
                    str(layer): TokenContrast(config.hidden_size, self.projection_dim, vocab, self.momentum)
                    for layer in self.contrastive_layers
                },
                pad_token_id=config.pad_token_id,
                decoder_start_token_id=getattr(config, "decoder_start_token_id", None),
            ).to(device)
            setattr(model, AUX_ATTR, heads)
        return model

    @staticmethod
    def _token_ids(aux: "ContrastiveAuxiliaries", out: TrainingOutputs) -> Tensor:
        """Token id at each position of the contrasted hidden states."""
        batch = out.batch
        if output_side(out.student) != "target":
            return batch["input_ids"]
        if "decoder_input_ids" in batch:
            return batch["decoder_input_ids"]
        # What BART feeds its decoder when only labels are given.
        from transformers.models.bart.modeling_bart import shift_tokens_right

        return shift_tokens_right(batch["labels"], aux.pad_token_id, aux.decoder_start_token_id)

    @staticmethod
    def _hidden_states(output: Any) -> tuple[Tensor, ...]:
        states = output.decoder_hidden_states if output_side(output) == "target" else output.hidden_states
        if states is None:
            raise ConfigError(
                "contrastive_qat got no hidden states; forward the student and teacher with "
                "output_hidden_states=method.needs_hidden_states."
            )
        return states

    def contrastive_loss(self, model_aux: "ContrastiveAuxiliaries", out: TrainingOutputs) -> Tensor:
        """Token-level InfoNCE averaged over ``contrastive_layers`` (updates the memory banks)."""
        mask = valid_token_mask(out.batch, output_side(out.student))
        token_ids = self._token_ids(model_aux, out)
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
        mask = valid_token_mask(out.batch, output_side(out.student))
        kd = logit_kd_loss(out.student.logits, out.teacher.logits, self.kd_temperature, mask=mask)
        loss = self.logit_weight * kd
        logs = {"loss/kd": float(kd.detach())}
        if self.contrastive:
            aux = getattr(out.model, AUX_ATTR, None) if out.model is not None else None
            if aux is None:
                raise RuntimeError("contrastive_qat.training_loss needs the prepared student in TrainingOutputs.model "
                                   "(its heads and memory banks); prepare the model first.")
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
        return super().finalize(model, ctx)

    def export(self, model: nn.Module, out_dir: Path, ctx: MethodContext) -> dict[str, Any]:
        """``qat``'s packed export; refuses a model that still carries the training-only heads."""
        if hasattr(model, AUX_ATTR):
            raise ConfigError("contrastive_qat.export got a model that was not finalized; call finalize() first.")
        return super().export(model, out_dir, ctx)
