"""The method lifecycle, written once: ``check → prepare → train → finalize`` for each stage of a
chain, in order (then ``export``, which the caller does with the last stage).

:func:`compress` is what the pipeline, the benchmarks and the test harness call; they differ only
in the training loop they hand it: the pipeline trains with the one LightningModule
(``training/pipeline.py``), the benchmarks and method tests with :class:`PlainTraining` (no
Lightning, so a benchmark measures the method, and a unit test stays fast).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import nn
from transformers import get_linear_schedule_with_warmup

from compbench.errors import ConfigError
from compbench.methods.base import Method, MethodContext, method_training_step

#: ``train(model, method, stage_index)``: runs ``method.training_steps`` steps on the prepared
#: model; returns the trained model (or None when it trained in place).
TrainLoop = Callable[[nn.Module, Method, int], "nn.Module | None"]


def compress(
    model: nn.Module,
    methods: Sequence[Method],
    context: Callable[[int, Method], MethodContext],
    train: TrainLoop | None = None,
    before_prepare: Callable[[int], None] | None = None,
) -> tuple[nn.Module, MethodContext]:
    """Run a chain of methods on ``model`` (modified or replaced; pass a copy to keep it).

    Args:
        model: the starting model (the fine-tuned teacher, or a copy of it).
        methods: the stages, in order.
        context: builds the :class:`MethodContext` of stage ``index``.
        train: the training loop for stages with ``training_steps > 0``.
        before_prepare: called with the stage index after ``check`` (the pipeline seeds there, so
            a stage's random initialisation depends on the run's seed and the stage only).

    Returns:
        (the finalized model in eval mode, the last stage's context — what its ``export`` needs).
    """
    if not methods:
        raise ConfigError("the method chain is empty; choose a method (e.g. method=none).")
    if len({id(m) for m in methods}) < len(methods):
        raise RuntimeError("the same Method object appears twice in the chain; build one object per stage.")
    ctx: MethodContext | None = None
    for index, method in enumerate(methods):
        ctx = context(index, method)
        model = prepare_stage(model, method, ctx, lambda: before_prepare(index) if before_prepare else None)
        if method.training_steps > 0:
            if train is None:
                raise RuntimeError(f"method '{method.name}' trains for {method.training_steps} steps; "
                                   "pass a training loop to compress.")
            trained = train(model, method, index)
            model = model if trained is None else trained
        model = method.finalize(model.eval(), ctx).eval()
    assert ctx is not None
    return model, ctx


def prepare_stage(model: nn.Module, method: Method, ctx: MethodContext,
                  before_prepare: Callable[[], None] | None = None) -> nn.Module:
    """The first half of one stage: the model it starts from (``start_from``), ``check``, then
    ``prepare``. :func:`compress` runs it for every stage; a benchmark that times training steps
    one at a time calls it, then steps the prepared model (``PlainTraining.start``)."""
    if method.start_from == "pretrained":
        if ctx.pretrained_loader is None:
            raise ConfigError(f"method '{method.name}' starts from the pretrained model, but this run has none to load.")
        model = ctx.pretrained_loader()
    method.check(ctx)
    if before_prepare is not None:
        before_prepare()
    return method.prepare(model, ctx)


class PlainTraining:
    """A training loop without Lightning, for :func:`compress`: AdamW over the method's parameter
    groups, optional linear warm-up/decay, the shared :func:`method_training_step` (teacher under
    ``no_grad`` when the method needs it), then ``on_train_step`` — what the LightningModule does
    each step, minus logging and checkpointing (gradient clipping only when ``clip`` is set).

    It is deliberately plain: the benchmarks time it as the reference the LightningModule's
    overhead is measured against, and step it (:meth:`start`) to time one step at a time.

    Args:
        batches: model inputs with labels; cycled when there are fewer than the steps.
        teacher: the full-precision teacher, for methods that distil.
        lr: learning rate (default: the method's ``learning_rate``).
        weight_decay: AdamW weight decay (the method's groups apply the no-decay rule).
        steps: number of steps (default: the method's ``training_steps``).
        schedule: linear warm-up (``warmup_ratio``) then linear decay, as the pipeline trains.
        warmup_ratio: fraction of the steps of warm-up when ``schedule``.
        clip: clip the gradients' global norm to this value (Lightning's ``gradient_clip_val``).

    ``losses`` holds the loss of every step taken.
    """

    def __init__(self, batches: Sequence[dict[str, torch.Tensor]], teacher: nn.Module | None = None,
                 lr: float | None = None, weight_decay: float = 0.0, steps: int | None = None,
                 schedule: bool = False, warmup_ratio: float = 0.0, clip: float | None = None) -> None:
        if not batches:
            raise ValueError("PlainTraining needs at least one batch.")
        self.batches, self.teacher = list(batches), teacher
        self.lr, self.weight_decay, self.steps = lr, weight_decay, steps
        self.schedule, self.warmup_ratio, self.clip = schedule, warmup_ratio, clip
        self.losses: list[float] = []

    def start(self, model: nn.Module, method: Method) -> "PlainSteps":
        """Optimizer and schedule for ``model`` (in train mode); ``.step()`` then runs one step."""
        return PlainSteps(self, model, method)

    def __call__(self, model: nn.Module, method: Method, index: int = 0) -> nn.Module:
        steps = self.start(model, method)
        for _ in range(steps.total):
            steps.step()
        return model.eval()


class PlainSteps:
    """One :class:`PlainTraining` run in progress: each :meth:`step` is one training step."""

    def __init__(self, loop: PlainTraining, model: nn.Module, method: Method) -> None:
        self.loop, self.model, self.method = loop, model, method
        self.total = loop.steps or method.training_steps
        lr = loop.lr if loop.lr is not None else method.learning_rate
        self.optimizer = torch.optim.AdamW(method.param_groups(model, lr, loop.weight_decay), lr=lr)
        self.scheduler = (get_linear_schedule_with_warmup(self.optimizer, int(loop.warmup_ratio * self.total),
                                                          max(self.total, 1)) if loop.schedule else None)
        self.taken = 0
        model.train()

    def step(self) -> float:
        """One step (forward, loss, backward, AdamW, schedule, ``on_train_step``); returns the loss."""
        loop, model = self.loop, self.model
        batch = loop.batches[self.taken % len(loop.batches)]
        loss, _, _ = method_training_step(self.method, model, loop.teacher, batch)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if loop.clip:
            torch.nn.utils.clip_grad_norm_(model.parameters(), loop.clip)
        self.optimizer.step()
        if self.scheduler is not None:
            self.scheduler.step()
        self.taken += 1
        self.method.on_train_step(model, self.taken, self.total)
        value = float(loss.detach())
        loop.losses.append(value)
        return value
