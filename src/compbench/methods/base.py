"""The lifecycle every compression method implements.

A method is a small validated object built by Hydra from ``conf/method/<name>.yaml``
(``_target_`` points at its class). The pipeline drives it in this order::

    check(ctx)                 # refuse bad combinations before anything expensive
    model = prepare(model, ctx)        # wrap / mask / build a student
    [training phase, if training_steps > 0: the one LightningModule calls
     training_loss() every step and on_train_step() for schedules]
    model = finalize(model, ctx)       # turn fake compression into the real thing
    export(model, out_dir, ctx)        # an honest artifact, reloadable by load_export()

Parameters are dataclass fields. ``build_method`` (in ``compbench.methods``) refuses
unknown keys with one sentence; ``__post_init__`` validates values.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import nn

from compbench.errors import ConfigError
from compbench.models.families import FAMILIES


@dataclass
class MethodContext:
    """What a method may know about the run it is part of.

    Attributes:
        family: ``encoder`` | ``decoder`` | ``encoder_decoder``.
        task: the task object (gives the task kind, the model class and data loaders).
        teacher: the fine-tuned full-precision model, or None when no teacher exists.
        tokenizer: the run's tokenizer.
        device: torch device the run trains on.
        seed: the run's seed.
        pretrained_loader: callable returning a fresh copy of the *pretrained* (not fine-tuned)
            model, for methods applied before fine-tuning.
        teacher_available: whether the run will have a teacher; lets ``check`` refuse a
            teacher-requiring method before the teacher is fine-tuned (``teacher`` is None then).
        finetune_steps: the teacher's fine-tuning steps (None without fine-tuning), for methods
            whose training phase must match that budget (``prune_magnitude when=before``).
        finetune_lr: the teacher's fine-tuning learning rate (None without fine-tuning).
    """

    family: str
    task: Any = None
    teacher: nn.Module | None = None
    tokenizer: Any = None
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    seed: int = 0
    pretrained_loader: Any = None
    teacher_available: bool = True
    finetune_steps: int | None = None
    finetune_lr: float | None = None


@dataclass
class TrainingOutputs:
    """What the LightningModule hands a method at each training step.

    Attributes:
        batch: the model inputs of this step (dict of tensors, including labels).
        student: the student's HF output (``logits``, ``loss``, hidden states/attentions if asked).
        teacher: the teacher's output for the same batch under ``no_grad``, or None.
        task_loss: the task loss of the student (``student.loss``).
        model: the student module itself (where a method keeps its training-time auxiliaries,
            e.g. ``contrastive_qat``'s heads and memory banks), or None.
    """

    batch: dict[str, torch.Tensor]
    student: Any
    teacher: Any
    task_loss: torch.Tensor
    model: nn.Module | None = None


@dataclass
class Method:
    """Base class: the identity method (the fine-tuned baseline).

    Subclasses add dataclass fields for their parameters and override the hooks they need.
    """

    #: Config name of the method (``conf/method/<name>.yaml``).
    name: str = "none"

    #: True when the method needs the fine-tuned teacher (distillation, QAT with KD).
    requires_teacher: ClassVar[bool] = False
    #: Families the method supports; ``check`` refuses others with a sentence.
    supported_families: ClassVar[tuple[str, ...]] = FAMILIES
    #: How latency of the finalized model is obtained: ``dense``, ``fake-quant`` or ``real-kernel``.
    eff_mode: ClassVar[str] = "dense"
    #: Devices the *finalized* model can run on (e.g. CPU-only integer kernels); evaluation
    #: with ``evaluation.device=auto`` uses CUDA only when the last stage allows it.
    inference_devices: ClassVar[tuple[str, ...]] = ("cpu", "cuda")
    #: Whether the teacher forward needs hidden states / attentions.
    needs_hidden_states: ClassVar[bool] = False
    needs_attentions: ClassVar[bool] = False

    # ---------------------------------------------------------------- lifecycle
    def check(self, ctx: MethodContext) -> None:
        """Refuse an impossible run before any model is trained (raise ConfigError)."""
        if ctx.family not in self.supported_families:
            raise ConfigError(
                f"method '{self.name}' does not support the {ctx.family} family; "
                f"it supports: {', '.join(self.supported_families)}."
            )
        if self.requires_teacher and not ctx.teacher_available and not self.teacher_optional:
            raise ConfigError(
                f"method '{self.name}' needs a fine-tuned teacher but this run has none; "
                "enable fine-tuning (finetune.enabled=true)."
            )

    #: Methods that can run without a teacher set this (e.g. QAT with ``distill=false``).
    @property
    def teacher_optional(self) -> bool:
        return False

    @property
    def start_from(self) -> str:
        """``finetuned`` (the cached teacher, default) or ``pretrained`` (compress, then train)."""
        return "finetuned"

    @property
    def training_steps(self) -> int:
        """Number of compression-training steps (the ``max_steps`` field of methods that train);
        0 means no training phase."""
        return int(getattr(self, "max_steps", 0))

    @property
    def learning_rate(self) -> float:
        """Peak learning rate of the training phase (the ``lr`` field of methods that train)."""
        return float(getattr(self, "lr", 5e-5))

    def prepare(self, model: nn.Module, ctx: MethodContext) -> nn.Module:
        """Return the model to train or to finalize (may be modified in place)."""
        return model

    def param_groups(self, model: nn.Module, lr: float, weight_decay: float) -> list[dict]:
        """Optimizer parameter groups: the trainable parameters under the one weight-decay rule
        (:func:`weight_decay_groups`); methods add their own (e.g. learned quantizer scales)."""
        return weight_decay_groups([p for p in model.parameters() if p.requires_grad], lr, weight_decay)

    def training_loss(self, out: TrainingOutputs) -> tuple[torch.Tensor, dict[str, float]]:
        """Return the loss to optimise and extra scalars to log."""
        return out.task_loss, {}

    def on_train_step(self, model: nn.Module, step: int, max_steps: int) -> None:
        """Called after each optimizer step (gradual schedules, mask updates)."""

    def finalize(self, model: nn.Module, ctx: MethodContext) -> nn.Module:
        """Return the final compressed model (e.g. fake-quant replaced by real kernels)."""
        return model

    def export(self, model: nn.Module, out_dir: Path, ctx: MethodContext) -> dict[str, Any]:
        """Write an artifact that ``compbench.methods.export.load_export`` reloads.

        The default writes the model with ``save_pretrained`` (safetensors). Returns the
        manifest written to ``compbench_export.json``.
        """
        from compbench.methods.export import save_hf_export

        return save_hf_export(model, out_dir, method=self.name)

    # ---------------------------------------------------------------- description
    def manifest_params(self) -> dict[str, Any]:
        """The method's parameters as JSON values, for export manifests (``manifest["params"]``):
        loaders read these, never ``row_params``' display strings."""
        return {f.name: (list(v) if isinstance(v := getattr(self, f.name), tuple) else v)
                for f in dataclasses.fields(self) if f.name != "name"}

    def row_params(self) -> dict[str, Any]:
        """Parameters for the results row (flattened later as ``method.<name>``)."""
        out = {}
        for f in dataclasses.fields(self):
            if f.name == "name":
                continue
            value = getattr(self, f.name)
            if isinstance(value, (list, tuple)):
                value = ",".join(map(str, value))
            elif isinstance(value, dict):
                value = str(value)
            out[f.name] = value
        return out


def weight_decay_groups(params: list[nn.Parameter], lr: float, weight_decay: float) -> list[dict]:
    """AdamW groups under the one rule every training loop in compbench uses: matrices (``ndim >= 2``)
    decay; biases and norm weights (``ndim < 2``) do not (standard transformer fine-tuning, as in
    BERT's and HF's Trainer recipes). Empty groups are left out."""
    decay = [p for p in params if p.ndim >= 2]
    no_decay = [p for p in params if p.ndim < 2]
    groups = [{"params": decay, "lr": lr, "weight_decay": weight_decay},
              {"params": no_decay, "lr": lr, "weight_decay": 0.0}]
    return [g for g in groups if g["params"]]


def method_training_step(method: Method, model: nn.Module, teacher: nn.Module | None,
                         batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, float], Any]:
    """One compression-training forward: student (and teacher, under ``no_grad``, when the method
    needs it) with the hidden states/attentions the method asks for, then the method's loss.

    The LightningModule, the method tests and the benchmarks all train through this function.

    Returns:
        (loss to optimise, extra scalars to log, the student's output).
    """
    flags = {"output_hidden_states": method.needs_hidden_states, "output_attentions": method.needs_attentions}
    student = model(**batch, **flags)
    teacher_out = None
    if teacher is not None and method.requires_teacher:
        with torch.no_grad():
            teacher_out = teacher(**teacher_inputs(teacher, batch), **flags)
    loss, extra = method.training_loss(TrainingOutputs(batch, student, teacher_out, student.loss, model))
    return loss, extra, student


def teacher_inputs(teacher: nn.Module, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The batch for the teacher's forward: without ``labels``, so the teacher computes no loss
    of its own (no method uses it, and a language model's loss is a log-softmax over
    ``[batch, seq, vocab]``: a few percent of a tiny GPT-2 QAT step). An encoder-decoder derives
    its decoder inputs from the labels; they are passed explicitly instead, built by the model's
    own ``prepare_decoder_input_ids_from_labels`` (what its forward does with labels), and the
    labels are kept where a model has no such method. The teacher's logits and hidden states are
    the same either way (tests/methods/test_qat.py)."""
    if "labels" not in batch:
        return batch
    inputs = {k: v for k, v in batch.items() if k != "labels"}
    if getattr(getattr(teacher, "config", None), "is_encoder_decoder", False) and "decoder_input_ids" not in batch:
        prepare = getattr(teacher, "prepare_decoder_input_ids_from_labels", None)
        if prepare is None or "decoder_inputs_embeds" in batch:
            return batch
        inputs["decoder_input_ids"] = prepare(labels=batch["labels"])
        inputs["use_cache"] = False  # as the forward sets it when given labels
    return inputs
