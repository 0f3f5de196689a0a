"""``method=kd``: knowledge distillation from the fine-tuned teacher into a shallower student.

The student is the teacher's own transformers class built from a smaller config
(``type(teacher)(config)``), so HF outputs and ``.generate()`` keep working and the export is a
plain, genuinely smaller HF model. By default its blocks are copied from a subset of the
teacher's blocks (DistilBERT-style initialisation); with ``student_config`` a differently shaped
student is randomly initialised instead. The loss follows Hinton et al. (2015), optionally with
TinyBERT-style hidden-state and attention-map terms:

    alpha * T^2 KL(teacher || student) + (1 - alpha) * task
        + hidden_weight * MSE(hidden) + attention_weight * MSE(attention maps)
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import nn

from compbench.errors import ConfigError
from compbench.methods.base import Method, MethodContext, TrainingOutputs, weight_decay_groups
from compbench.methods.distillation.losses import attention_loss, hidden_state_loss, logit_kd_loss, valid_token_mask
from compbench.methods.export import save_hf_export
from compbench.models.architecture import Stack, find_stacks

LAYER_INITS = ("uniform", "first", "last")


def select_layers(student_layers: int, teacher_layers: int, layer_init: str) -> list[int]:
    """Teacher block ids (0-based) that initialise each student block.

    ``uniform`` takes every k-th block ending with the last one (6 of 12 -> 1, 3, 5, 7, 9, 11, as
    DistilBERT-style students keep the top block); ``first``/``last`` take the bottom/top blocks.
    """
    if layer_init == "first":
        return list(range(student_layers))
    if layer_init == "last":
        return list(range(teacher_layers - student_layers, teacher_layers))
    return [(i + 1) * teacher_layers // student_layers - 1 for i in range(student_layers)]


def _sentence_list(values: Any) -> str:
    return ", ".join(map(str, values))


@dataclass
class KnowledgeDistillation(Method):
    """Distil the fine-tuned teacher into a student with fewer (or narrower) blocks.

    Attributes:
        student_layers: blocks of the student (both stacks of an encoder-decoder); None = half of
            the teacher's depth (at least 1), the DistilBERT ratio.
        student_encoder_layers: encoder blocks of an encoder-decoder student (overrides
            ``student_layers``).
        student_decoder_layers: decoder blocks of an encoder-decoder student (overrides
            ``student_layers``).
        layer_init: which teacher blocks initialise the student: ``uniform``, ``first``, ``last``.
        layer_ids: explicit teacher block ids (0-based) instead of ``layer_init``; for an
            encoder-decoder they apply to both stacks. Their count is the student depth.
        student_config: config overrides for a differently shaped student (e.g.
            ``{hidden_size: 128}``); its blocks are then randomly initialised, and embeddings and
            heads are copied only where their shapes still match the teacher's.
        temperature: softmax temperature T of the logit loss.
        alpha: weight of the logit KD loss; ``1 - alpha`` weighs the task loss.
        hidden_weight: weight of the hidden-state MSE (0 = off).
        attention_weight: weight of the attention-map loss (0 = off; needs equal head counts).
        layer_map: explicit ``[student_block, teacher_block]`` pairs for the hidden/attention
            losses; default: each student block to the teacher block it was initialised from.
        max_steps: distillation steps.
        lr: peak learning rate.
    """

    name: str = "kd"
    student_layers: int | None = None
    student_encoder_layers: int | None = None
    student_decoder_layers: int | None = None
    layer_init: str = "uniform"
    layer_ids: list[int] | None = None
    student_config: dict[str, Any] | None = None
    temperature: float = 2.0
    alpha: float = 0.5
    hidden_weight: float = 0.0
    attention_weight: float = 0.0
    layer_map: list[list[int]] | None = None
    max_steps: int = 1000
    lr: float = 5e-5

    requires_teacher: ClassVar[bool] = True

    def __post_init__(self) -> None:
        # Run state set by prepare (plain attributes, not parameters, so they stay out of the row):
        # learned width projections (training only, never exported), per-stack layer maps and
        # the teacher blocks each student block was initialised from.
        self._projections: nn.ModuleDict | None = None
        self._layer_maps: dict[str, list[tuple[int, int]]] = {}
        self._teacher_ids: dict[str, list[int]] = {}
        self._stacks: list[Stack] = []
        for attr in ("student_layers", "student_encoder_layers", "student_decoder_layers"):
            value = getattr(self, attr)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
                raise ConfigError(f"kd {attr} must be an integer >= 1 (got {value!r}).")
        if self.layer_init not in LAYER_INITS:
            raise ConfigError(f"kd layer_init must be one of {', '.join(LAYER_INITS)} (got {self.layer_init!r}).")
        if self.layer_ids is not None:
            ids = list(self.layer_ids)
            if not ids or any(not isinstance(i, int) or i < 0 for i in ids) or len(set(ids)) != len(ids):
                raise ConfigError(f"kd layer_ids must be distinct non-negative teacher block ids (got {ids!r}).")
            if self.student_layers is not None and self.student_layers != len(ids):
                raise ConfigError(
                    f"kd student_layers={self.student_layers} disagrees with the {len(ids)} layer_ids; "
                    "set only one of them."
                )
        if self.student_config is not None and not isinstance(self.student_config, dict):
            raise ConfigError(
                f"kd student_config must be a mapping of config overrides (got {self.student_config!r})."
            )
        if not 0.0 <= self.alpha <= 1.0:
            raise ConfigError(
                f"kd alpha must be in [0, 1] (got {self.alpha}); it weighs the KD loss against the task loss."
            )
        if not self.temperature > 0:
            raise ConfigError(f"kd temperature must be > 0 (got {self.temperature}); 1-4 is usual.")
        for attr in ("hidden_weight", "attention_weight"):
            if getattr(self, attr) < 0:
                raise ConfigError(
                    f"kd {attr} must be >= 0 (got {getattr(self, attr)}); use 0 to switch that loss off."
                )
        if self.layer_map is not None:
            pairs = [list(p) for p in self.layer_map]
            if not pairs or any(len(p) != 2 or any(not isinstance(i, int) or i < 0 for i in p) for p in pairs):
                raise ConfigError(
                    "kd layer_map must be a list of [student_block, teacher_block] pairs of block ids "
                    f"(got {self.layer_map!r})."
                )
        if self.max_steps < 1:
            raise ConfigError(f"kd max_steps must be >= 1 (got {self.max_steps}); distillation needs training steps.")
        if not self.lr > 0:
            raise ConfigError(f"kd lr must be > 0 (got {self.lr}).")

    # ---------------------------------------------------------------- what the trainer asks
    @property
    def needs_hidden_states(self) -> bool:  # type: ignore[override]
        """Hidden states are only requested when the hidden-state loss is on (they cost memory)."""
        return self.hidden_weight > 0

    @property
    def needs_attentions(self) -> bool:  # type: ignore[override]
        """Attention maps are only requested when the attention loss is on."""
        return self.attention_weight > 0

    # ---------------------------------------------------------------- student shape
    def _student_depths(self, teacher: nn.Module, stacks: list[Stack]) -> dict[str, int]:
        """Student blocks per stack, from the fields (or half the teacher's depth by default)."""
        depths = {}
        for stack in stacks:
            depth = getattr(self, f"student_{stack.name}_layers", None) if stack.name != "layers" else None
            if depth is None and self.layer_ids is not None:
                depth = len(self.layer_ids)
            if depth is None and self.student_config and stack.layers_attr in self.student_config:
                depth = self.student_config[stack.layers_attr]
            if depth is None:
                depth = self.student_layers
            if depth is None:
                depth = max(1, getattr(teacher.config, stack.layers_attr) // 2)
            depths[stack.name] = depth
        return depths

    def _student_config(self, teacher: nn.Module, stacks: list[Stack], depths: dict[str, int]):
        config = copy.deepcopy(teacher.config)
        for key, value in (self.student_config or {}).items():
            if not hasattr(config, key):
                raise ConfigError(
                    f"kd student_config key {key!r} is not an attribute of {type(config).__name__}; check its spelling."
                )
            setattr(config, key, value)
        for stack in stacks:
            setattr(config, stack.layers_attr, depths[stack.name])
        return config

    def check(self, ctx: MethodContext) -> None:
        """Refuse a student that is not smaller than the teacher, or impossible layer choices.

        The pipeline calls ``check`` twice: once before fine-tuning (``ctx.teacher`` is None, only
        the base checks apply) and once with the fine-tuned teacher, before ``prepare`` and before
        any distillation step; the teacher-dependent checks run then.
        """
        super().check(ctx)
        teacher = ctx.teacher
        if teacher is None:
            return
        stacks = find_stacks(teacher, "kd")
        if len(stacks) == 1 and (self.student_encoder_layers is not None or self.student_decoder_layers is not None):
            raise ConfigError(
                "kd student_encoder_layers/student_decoder_layers apply to encoder-decoder models only; "
                "use student_layers."
            )
        depths = self._student_depths(teacher, stacks)
        student_config = self._student_config(teacher, stacks, depths)
        for stack in stacks:
            teacher_depth = getattr(teacher.config, stack.layers_attr)
            depth = depths[stack.name]
            label = "student_layers" if stack.name == "layers" else f"the student's {stack.name} depth"
            # A narrower student (student_config) may keep the depth; a copied one must be shallower.
            limit_ok = depth <= teacher_depth if self.student_config else depth < teacher_depth
            if not 1 <= depth or not limit_ok:
                raise ConfigError(
                    f"kd {label} must be >= 1 and < the teacher's {teacher_depth} {stack.name} blocks (got {depth})."
                )
            if self.layer_ids is not None and max(self.layer_ids) >= teacher_depth:
                raise ConfigError(
                    f"kd layer_ids {_sentence_list(self.layer_ids)} must be < the teacher's "
                    f"{teacher_depth} {stack.name} blocks."
                )
            if self.layer_map is not None:
                bad = [p for p in self.layer_map if p[0] >= depth or p[1] >= teacher_depth]
                if bad:
                    raise ConfigError(
                        f"kd layer_map pairs {bad} are out of range for a {depth}-block student and a "
                        f"{teacher_depth}-block teacher ({stack.name})."
                    )
            if self.attention_weight > 0:
                student_heads = getattr(student_config, stack.heads_attr)
                teacher_heads = getattr(teacher.config, stack.heads_attr)
                if student_heads != teacher_heads:
                    raise ConfigError(
                        f"kd attention_weight needs equal head counts but the student has {student_heads} and the "
                        f"teacher {teacher_heads} ({stack.name}); set attention_weight=0."
                    )

    # ---------------------------------------------------------------- lifecycle
    def prepare(self, model: nn.Module, ctx: MethodContext) -> nn.Module:
        """Build the student from ``model`` (the fine-tuned teacher copy) and return it."""
        teacher = model
        stacks = find_stacks(teacher, "kd")
        depths = self._student_depths(teacher, stacks)
        config = self._student_config(teacher, stacks, depths)
        self._teacher_ids = {
            stack.name: list(self.layer_ids)
            if self.layer_ids is not None
            else select_layers(depths[stack.name], getattr(teacher.config, stack.layers_attr), self.layer_init)
            for stack in stacks
        }
        reference = next(teacher.parameters())
        # Fork the RNG so the random init of a reshaped student is reproducible per run seed
        # without shifting the global random stream the rest of the run relies on.
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(ctx.seed)
            student = type(teacher)(config)
        student.to(device=reference.device, dtype=reference.dtype)
        self._copy_weights(teacher, student, stacks)
        if getattr(teacher, "generation_config", None) is not None:
            student.generation_config = copy.deepcopy(teacher.generation_config)
        if self.attention_weight > 0:
            # SDPA kernels return no attention maps; eager attention computes the same outputs.
            student.set_attn_implementation("eager")
            for other in (teacher, ctx.teacher):
                if other is not None:
                    other.set_attn_implementation("eager")

        self._stacks = stacks
        self._layer_maps = {
            stack.name: [tuple(p) for p in self.layer_map]
            if self.layer_map is not None
            else list(enumerate(self._teacher_ids[stack.name]))
            for stack in stacks
        }
        self._projections = None
        if self.hidden_weight > 0 and config.hidden_size != teacher.config.hidden_size:
            # Learned maps from student to teacher width (TinyBERT's W_h); training-only.
            self._projections = nn.ModuleDict(
                {
                    name: nn.ModuleList(nn.Linear(config.hidden_size, teacher.config.hidden_size) for _ in pairs)
                    for name, pairs in self._layer_maps.items()
                }
            ).to(device=reference.device, dtype=reference.dtype)
        student.train(teacher.training)
        return student

    def _copy_weights(self, teacher: nn.Module, student: nn.Module, stacks: list[Stack]) -> None:
        """Copy embeddings/heads (where shapes match) and the selected blocks into the student."""
        teacher_state = teacher.state_dict()
        state = student.state_dict()
        for key, value in state.items():
            source_key = key
            for stack in stacks:
                prefix = f"{stack.module_path}."
                if key.startswith(prefix):
                    if self.student_config:
                        source_key = None  # a reshaped student's blocks start from random init
                        break
                    index, rest = key[len(prefix):].split(".", 1)
                    source_key = f"{prefix}{self._teacher_ids[stack.name][int(index)]}.{rest}"
                    break
            source = teacher_state.get(source_key) if source_key is not None else None
            if source is not None and source.shape == value.shape:
                state[key] = source.detach().clone()
        student.load_state_dict(state, strict=True)

    def param_groups(self, model: nn.Module, lr: float, weight_decay: float) -> list[dict]:
        """The student's parameters and the width projections (if any), under the one decay rule."""
        params = [p for p in model.parameters() if p.requires_grad]
        if self._projections is not None:
            params += list(self._projections.parameters())
        return weight_decay_groups(params, lr, weight_decay)

    def training_loss(self, out: TrainingOutputs) -> tuple[torch.Tensor, dict[str, float]]:
        """The weighted sum of logit KD, task, hidden-state and attention losses."""
        if out.teacher is None:
            raise ConfigError(
                "kd got no teacher outputs; the trainer must forward the teacher (requires_teacher=True)."
            )
        student, teacher = out.student, out.teacher
        # Logits follow the last stack: the decoder of an encoder-decoder, else the only stack.
        logits_mask = valid_token_mask(out.batch, side=self._stacks[-1].mask_side)
        kd = logit_kd_loss(student.logits, teacher.logits, self.temperature, logits_mask)
        loss = self.alpha * kd
        logs = {"kd_logit": float(kd.detach())}
        if self.alpha < 1:
            if out.task_loss is None:
                raise ConfigError("kd with alpha < 1 needs a task loss; the batch must contain labels.")
            loss = loss + (1 - self.alpha) * out.task_loss
            logs["kd_task"] = float(out.task_loss.detach())
        for stack in self._stacks:
            pairs = self._layer_maps[stack.name]
            mask = valid_token_mask(out.batch, side=stack.mask_side)
            if self.hidden_weight > 0:
                projection = None
                if self._projections is not None:
                    # The trainer moves the student, not the method: follow the student's device.
                    projection = self._projections[stack.name].to(student.logits.device)
                hidden = hidden_state_loss(
                    getattr(student, f"{stack.output_prefix}hidden_states"),
                    getattr(teacher, f"{stack.output_prefix}hidden_states"),
                    pairs, mask, projection,
                )
                loss = loss + self.hidden_weight * hidden
                logs[f"kd_hidden_{stack.name}"] = float(hidden.detach())
            if self.attention_weight > 0:
                attention = attention_loss(
                    getattr(student, f"{stack.output_prefix}attentions"),
                    getattr(teacher, f"{stack.output_prefix}attentions"),
                    pairs, mask,
                )
                loss = loss + self.attention_weight * attention
                logs[f"kd_attention_{stack.name}"] = float(attention.detach())
        return loss, logs

    def export(self, model: nn.Module, out_dir: Path, ctx: MethodContext) -> dict[str, Any]:
        """Save the student alone (the width projections are training-only and not exported)."""
        return save_hf_export(
            model, out_dir, method=self.name,
            teacher_layers={name: ids for name, ids in self._teacher_ids.items()},
        )
