"""``method=prune_magnitude``: unstructured magnitude pruning with ``torch.nn.utils.prune``.

Targets are the 2-D weights of the transformer blocks (``nn.Linear`` and GPT-2's ``Conv1D``,
pruned as stored); embeddings and the task/LM head join only when asked. ``scope=global`` ranks
all targets together (``prune.global_unstructured``), ``per_layer`` prunes each tensor to the
same sparsity (``prune.l1_unstructured``). ``schedule=gradual`` follows the cubic schedule of
Zhu & Gupta 2017 ("To prune, or not to prune", eq. 1) during the training phase; ``when=before``
prunes the pretrained model and the training phase is the task fine-tuning with the mask kept
(the AfriBERTa study's before/after comparison). So that before/after compare pruning and not
training budgets, ``when=before`` fine-tunes with the teacher's budget (``finetune.max_steps``
and ``finetune.lr``, same warm-up and weight decay) unless ``max_steps``/``lr`` are set; its
fresh task head is initialised under the run's seed (``ModelSpec.build_model``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.nn.utils import prune
from transformers.pytorch_utils import Conv1D

from compbench.errors import ConfigError
from compbench.methods.base import Method, MethodContext
from compbench.methods.pruning.sparse_storage import VALUE_DTYPES, save_sparse_export

SCOPES = ("global", "per_layer")
SCHEDULES = ("oneshot", "gradual")
WHENS = ("before", "after")


def cubic_sparsity(step: int, final_sparsity: float, start_step: int, end_step: int, initial_sparsity: float = 0.0) -> float:
    """Zhu & Gupta 2017 eq. 1: s_t = s_f + (s_i - s_f) (1 - (t - t0) / (end - t0))^3, clamped to [t0, end]."""
    if step <= start_step:
        return initial_sparsity
    if step >= end_step:
        return final_sparsity
    progress = (step - start_step) / (end_step - start_step)
    return final_sparsity + (initial_sparsity - final_sparsity) * (1.0 - progress) ** 3


def _head_module_names(model: nn.Module) -> set[str]:
    """Top-level modules outside the base model (classifier, lm_head, score, ...)."""
    prefix = getattr(model, "base_model_prefix", "")
    return {name for name, _ in model.named_children() if name != prefix}


def prunable_targets(
    model: nn.Module, include_embeddings: bool = False, include_head: bool = False
) -> tuple[list[tuple[str, nn.Module]], dict[str, str]]:
    """The modules whose ``weight`` is pruned, each tensor once even when tied.

    A tensor tied between an embedding and the head (GPT-2 / BART LM heads) is pruned when either
    switch includes it: pruning a tied head necessarily prunes the embedding it shares.

    Returns:
        (``[(module name, module)]`` owning each pruned tensor, ``{tied module name: owner name}``).
    """
    heads = _head_module_names(model)
    owners: dict[int, str] = {}
    targets: list[tuple[str, nn.Module]] = []
    tied: dict[str, str] = {}
    by_param: dict[int, list[tuple[str, nn.Module, bool]]] = {}
    for name, module in model.named_modules():
        weight = getattr(module, "weight", None)
        if not isinstance(weight, nn.Parameter):
            continue
        in_head = name.split(".", 1)[0] in heads
        if isinstance(module, nn.Embedding):
            wanted = include_embeddings
        elif isinstance(module, (nn.Linear, Conv1D)):
            wanted = include_head if in_head else True
        else:  # LayerNorm and anything else: never pruned
            continue
        by_param.setdefault(id(weight), []).append((name, module, wanted))
    for entries in by_param.values():
        if not any(wanted for _, _, wanted in entries):
            continue
        owner_name, owner = entries[0][0], entries[0][1]
        owners[id(owner)] = owner_name
        targets.append((owner_name, owner))
        for name, _, _ in entries[1:]:
            tied[name] = owner_name
    return targets, tied


def weight_sparsity(modules: list[nn.Module]) -> float:
    """Fraction of exact zeros over the (masked) weights of ``modules``."""
    zeros = sum(int((m.weight == 0).sum()) for m in modules)
    total = sum(m.weight.numel() for m in modules)
    return zeros / max(total, 1)


def _mask_or_ones(module: nn.Module) -> torch.Tensor:
    mask = getattr(module, "weight_mask", None)
    return mask if mask is not None else torch.ones_like(module.weight)


def _current_weight(module: nn.Module) -> torch.Tensor:
    """The masked weight as it is *now* (``module.weight`` is only refreshed at forward time)."""
    if hasattr(module, "weight_orig"):
        return module.weight_orig.detach() * module.weight_mask
    return module.weight.detach()


def _forget_mask_history(module: nn.Module) -> None:
    """Keep only the newest pruning method in the module's ``PruningContainer``.

    torch stacks one ``CustomFromMask`` (holding a full mask copy) per call; a container only ever
    uses its last method (``PruningContainer.compute_mask``) and the live mask is the
    ``weight_mask`` buffer, so dropping older entries saves memory in gradual schedules.
    """
    for hook in module._forward_pre_hooks.values():
        if isinstance(hook, prune.PruningContainer):
            hook._pruning_methods = hook._pruning_methods[-1:]


@dataclass
class MagnitudePruning(Method):
    """Unstructured magnitude pruning (one-shot or gradual, before or after fine-tuning).

    Attributes:
        sparsity: final fraction of zero weights among the targeted tensors, in [0, 1).
        scope: ``global`` (one threshold over all targets) or ``per_layer`` (each tensor alike).
        schedule: ``oneshot`` or ``gradual`` (cubic, Zhu & Gupta 2017).
        when: ``after`` prunes the fine-tuned model; ``before`` prunes the pretrained one and the
            training phase is the task fine-tuning with the mask kept.
        max_steps: training steps after/while pruning; null = 0 with ``after``, the teacher's
            fine-tuning steps with ``before`` (filled in by ``check``).
        lr: learning rate of that phase; null = 5e-5 with ``after``, the teacher's fine-tuning
            learning rate with ``before``.
        start_step: first step of the gradual schedule.
        end_step: step at which the gradual schedule reaches ``sparsity`` (None = ``max_steps``).
        update_every: steps between mask updates of the gradual schedule (Zhu & Gupta's delta t).
        include_embeddings: also prune embedding tables (token, position).
        include_head: also prune the classification / LM head.
        value_dtype: dtype of the stored non-zero values in the export (``float32`` exact,
            ``float16`` lossy and smaller).
    """

    name: str = "prune_magnitude"
    sparsity: float = 0.5
    scope: str = "global"
    schedule: str = "oneshot"
    when: str = "after"
    max_steps: int | None = None
    lr: float | None = None
    start_step: int = 0
    end_step: int | None = None
    update_every: int = 1
    include_embeddings: bool = False
    include_head: bool = False
    value_dtype: str = "float32"

    def __post_init__(self) -> None:
        if not 0.0 <= float(self.sparsity) < 1.0:
            raise ConfigError(f"prune_magnitude.sparsity must be in [0, 1), got {self.sparsity}.")
        for field_name, allowed in (("scope", SCOPES), ("schedule", SCHEDULES), ("when", WHENS)):
            if getattr(self, field_name) not in allowed:
                raise ConfigError(
                    f"prune_magnitude.{field_name} must be one of {', '.join(allowed)}, got {getattr(self, field_name)!r}."
                )
        if self.value_dtype not in VALUE_DTYPES:
            raise ConfigError(f"prune_magnitude.value_dtype must be one of {', '.join(VALUE_DTYPES)}, got {self.value_dtype!r}.")
        if self.when == "after":  # nothing to inherit: the documented defaults
            self.max_steps = 0 if self.max_steps is None else self.max_steps
            self.lr = 5e-5 if self.lr is None else self.lr
        if (self.max_steps is not None and self.max_steps < 0) or (self.lr is not None and self.lr <= 0):
            raise ConfigError(f"prune_magnitude needs max_steps >= 0 and lr > 0, got {self.max_steps} and {self.lr}.")
        if self.update_every < 1:
            raise ConfigError(f"prune_magnitude.update_every must be >= 1, got {self.update_every}.")
        self._targets: list[tuple[str, nn.Module]] = []
        self._tied: dict[str, str] = {}
        self._tie_hooks: list[Any] = []
        if self.max_steps is not None:
            self._check_steps()

    def _check_steps(self) -> None:
        if self.schedule == "gradual":
            if self.max_steps == 0:
                raise ConfigError("prune_magnitude with schedule=gradual needs a training phase; set max_steps > 0.")
            end = self.max_steps if self.end_step is None else self.end_step
            if not 0 <= self.start_step < end <= self.max_steps:
                raise ConfigError(
                    f"prune_magnitude needs 0 <= start_step < end_step <= max_steps, got "
                    f"{self.start_step}, {end}, {self.max_steps}."
                )
        if self.when == "before" and self.max_steps == 0:
            raise ConfigError(
                "prune_magnitude with when=before prunes the pretrained model and needs max_steps > 0 of task fine-tuning."
            )

    def check(self, ctx: MethodContext) -> None:
        """With ``when=before``, fill ``max_steps``/``lr`` left null from the teacher's fine-tuning."""
        super().check(ctx)
        if self.when != "before":
            return
        if self.max_steps is None:
            if not ctx.finetune_steps:
                raise ConfigError(
                    "prune_magnitude with when=before takes the teacher's fine-tuning budget, but this run does not "
                    "fine-tune; set method.max_steps (and method.lr) explicitly."
                )
            self.max_steps = int(ctx.finetune_steps)
        if self.lr is None:
            if ctx.finetune_lr is None:
                raise ConfigError(
                    "prune_magnitude with when=before takes the teacher's fine-tuning learning rate, but this run does "
                    "not fine-tune; set method.lr explicitly."
                )
            self.lr = float(ctx.finetune_lr)
        self._check_steps()

    # ---------------------------------------------------------------- properties
    @property
    def start_from(self) -> str:
        return "pretrained" if self.when == "before" else "finetuned"

    def sparsity_at(self, step: int, max_steps: int | None = None) -> float:
        """Target sparsity after optimizer step ``step`` (oneshot: always ``sparsity``)."""
        if self.schedule == "oneshot":
            return self.sparsity
        total = self.max_steps if max_steps is None else max_steps
        end = min(total, self.end_step) if self.end_step is not None else total
        return cubic_sparsity(step, self.sparsity, self.start_step, end)

    # ---------------------------------------------------------------- lifecycle
    def prepare(self, model: nn.Module, ctx: MethodContext) -> nn.Module:
        self._targets, self._tied = prunable_targets(model, self.include_embeddings, self.include_head)
        if not self._targets:
            raise ConfigError("prune_magnitude found no weights to prune in this model; check include_* switches.")
        # Identity masks first so gradual schedules have a mask to grow and tied copies follow it.
        for _, module in self._targets:
            prune.identity(module, "weight")
        self._tie_modules(model)
        self.prune_to(self.sparsity_at(0))
        return model

    def on_train_step(self, model: nn.Module, step: int, max_steps: int) -> None:
        if self.schedule != "gradual":
            return
        end = min(max_steps, self.end_step) if self.end_step is not None else max_steps
        if step >= self.start_step and ((step - self.start_step) % self.update_every == 0 or step >= end):
            self.prune_to(self.sparsity_at(step, max_steps))

    def finalize(self, model: nn.Module, ctx: MethodContext) -> nn.Module:
        # A gradual run cut short still ends at the requested sparsity.
        self.prune_to(self.sparsity)
        for handle in self._tie_hooks:
            handle.remove()
        self._tie_hooks = []
        owners = dict(self._targets)
        for _, module in self._targets:
            prune.remove(module, "weight")
        for tied_name, owner_name in self._tied.items():  # restore the tie to the now plain Parameter
            tied_module = model.get_submodule(tied_name)
            tied_module.__dict__.pop("weight", None)
            tied_module.weight = owners[owner_name].weight
        return model

    def export(self, model: nn.Module, out_dir: Path, ctx: MethodContext) -> dict[str, Any]:
        return save_sparse_export(
            model, out_dir, method=self.name, value_dtype=self.value_dtype,
            sparsity=weight_sparsity([m for _, m in self._targets]) if self._targets else None,
        )

    # ---------------------------------------------------------------- pruning
    def target_modules(self) -> list[nn.Module]:
        """The modules whose weight this method prunes (after ``prepare``)."""
        return [module for _, module in self._targets]

    def prune_to(self, sparsity: float) -> None:
        """Grow the masks so that exactly round(sparsity * n) target weights are zero (never shrink)."""
        modules = self.target_modules()
        if self.scope == "global":
            total = sum(m.weight.numel() for m in modules)
            pruned = sum(int((_mask_or_ones(m) == 0).sum()) for m in modules)
            extra = round(sparsity * total) - pruned
            if extra > 0:
                prune.global_unstructured(
                    [(m, "weight") for m in modules],
                    pruning_method=prune.L1Unstructured,
                    importance_scores={(m, "weight"): _current_weight(m) for m in modules},
                    amount=extra,
                )
        else:
            for module in modules:
                extra = round(sparsity * module.weight.numel()) - int((_mask_or_ones(module) == 0).sum())
                if extra > 0:
                    prune.l1_unstructured(module, "weight", amount=extra, importance_scores=_current_weight(module))
        for module in modules:
            _forget_mask_history(module)

    def _tie_modules(self, model: nn.Module) -> None:
        """Make modules tied to a pruned tensor use the owner's masked weight at every forward.

        ``prune`` swaps the owner's Parameter for ``weight_orig * weight_mask`` computed in the owner's
        own forward hook; a tied head (e.g. GPT-2's ``lm_head``) would otherwise keep reading the
        unmasked original, and BART's ``shared`` table is never called itself.
        """
        owners = dict(self._targets)
        for tied_name, owner_name in self._tied.items():
            tied_module, owner = model.get_submodule(tied_name), owners[owner_name]
            del tied_module._parameters["weight"]

            def _use_owner_weight(module, args, owner=owner):
                module.weight = owner.weight_orig * owner.weight_mask

            _use_owner_weight(tied_module, ())
            self._tie_hooks.append(tied_module.register_forward_pre_hook(_use_owner_weight))

