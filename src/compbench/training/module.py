"""The one LightningModule: fine-tuning and every compression-training phase.

Task specifics live in the task (batches carry everything the model needs, labels included);
method specifics live in the method's hooks (``training_loss``, ``on_train_step``,
``param_groups``). Fine-tuning is this module with the identity method.
"""

from __future__ import annotations

import time
from typing import Any

import lightning as L
import torch
from torch import nn
from transformers import get_linear_schedule_with_warmup

from compbench.methods.base import Method, method_training_step
from compbench.methods.none import NoCompression

#: Keys a task may add to batches for its own evaluation bookkeeping; never fed to the model.
_NON_MODEL_KEYS = ("word_ids", "doc")


class CompressionModule(L.LightningModule):
    """Trains ``model`` on the task loss as shaped by ``method``.

    Args:
        model: the transformers model being trained (student).
        method: the method whose hooks shape the loss; the identity method for fine-tuning.
        teacher: frozen full-precision teacher, forwarded under ``no_grad`` when the method needs it.
        lr: peak learning rate.
        weight_decay: AdamW weight decay.
        warmup_ratio: fraction of ``max_steps`` of linear warm-up, then linear decay to 0.
        max_steps: total optimizer steps (for the schedule and the method's schedule hooks).
    """

    def __init__(
        self,
        model: nn.Module,
        method: Method | None = None,
        teacher: nn.Module | None = None,
        lr: float = 5e-5,
        weight_decay: float = 0.01,
        warmup_ratio: float = 0.1,
        max_steps: int = 100,
    ) -> None:
        super().__init__()
        self.model = model
        self.method = method or NoCompression()
        self.use_teacher = teacher is not None and self.method.requires_teacher
        # A list hides the teacher from Lightning's module tree: it is not trained, not
        # checkpointed and not wrapped by DDP, but moved to the device in on_fit_start.
        self._teacher = [teacher.eval().requires_grad_(False)] if self.use_teacher else []
        self.lr = lr
        self.weight_decay = weight_decay
        self.warmup_ratio = warmup_ratio
        self.max_steps = max_steps
        #: Wall time of each training step (batch start to after the optimizer step), s.
        self.step_times_s: list[float] = []
        self._step_start = 0.0

    @property
    def teacher(self) -> nn.Module | None:
        return self._teacher[0] if self._teacher else None

    def on_fit_start(self) -> None:
        # The model arrives in eval mode (a copy of the evaluated teacher); Lightning keeps each
        # submodule's mode, so switch dropout etc. back on for training explicitly.
        self.model.train()
        if self.teacher is not None:
            self.teacher.to(self.device)

    def _model_inputs(self, batch: dict[str, Any]) -> dict[str, Any]:
        return {k: v for k, v in batch.items() if k not in _NON_MODEL_KEYS}

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        inputs = self._model_inputs(batch)
        loss, extra, student = method_training_step(self.method, self.model, self.teacher if self.use_teacher else None,
                                                    inputs)
        if not torch.isfinite(loss):
            raise FloatingPointError(f"non-finite training loss ({float(loss)}) at step {self.global_step}")
        if self._logs_this_step():
            size = inputs["input_ids"].shape[0]
            self.log("train/loss", loss, prog_bar=True, batch_size=size)
            self.log("train/task_loss", student.loss.detach(), batch_size=size)
            for name, value in extra.items():
                self.log(f"train/{name}", value, batch_size=size)
        return loss

    def _logs_this_step(self) -> bool:
        """Whether Lightning writes this step's metrics to the loggers (every ``log_every_n_steps``).

        ``self.log`` costs Python time on every call (the largest item of Lightning's fixed
        per-step cost in the ``python -m compbench.bench`` train_overhead profile), so the training
        scalars are handed over only on the steps the loggers receive; what they record is
        unchanged (the same step values), the progress bar refreshes its loss on those steps.
        """
        trainer = self._trainer
        connector = getattr(trainer, "_logger_connector", None) if trainer is not None else None
        try:
            return connector is None or bool(connector.should_update_logs)
        except Exception:  # outside a fit loop (e.g. a manual call): log as usual
            return True

    def on_before_optimizer_step(self, optimizer) -> None:
        # Exploding gradients: a finite loss can still give inf/NaN gradients; stop before the
        # optimizer writes them into the weights (the check costs one norm per step). With
        # gradient clipping on, configure_gradient_clipping checks the norm it computes anyway.
        if self._trainer is not None and self.trainer.gradient_clip_val:
            return
        grads = [p.grad for p in self.model.parameters() if p.grad is not None]
        if grads:
            self._check_grad_norm(torch.nn.utils.get_total_norm(grads))

    def configure_gradient_clipping(self, optimizer, gradient_clip_val=None, gradient_clip_algorithm=None) -> None:
        """Lightning's norm clipping, with the finiteness check on the norm it computes: one
        gradient norm per step instead of two (the pipeline clips by default: trainer.gradient_clip_val)."""
        if gradient_clip_val and (gradient_clip_algorithm or "norm") == "norm":
            params = [p for group in optimizer.param_groups for p in group["params"] if p.grad is not None]
            if params:
                self._check_grad_norm(torch.nn.utils.clip_grad_norm_(params, gradient_clip_val))
            return
        self.clip_gradients(optimizer, gradient_clip_val, gradient_clip_algorithm)

    def _check_grad_norm(self, norm: torch.Tensor) -> None:
        if not torch.isfinite(norm):
            raise FloatingPointError(f"non-finite gradient norm ({float(norm)}) at step {self.global_step}")

    def _sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def on_train_batch_start(self, batch: Any, batch_idx: int) -> None:
        self._sync()
        self._step_start = time.perf_counter()

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        self.method.on_train_step(self.model, self.global_step, self.max_steps)
        self._sync()
        self.step_times_s.append(time.perf_counter() - self._step_start)

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        inputs = self._model_inputs(batch)
        out = self.model(**inputs)
        self.log("val/loss", out.loss, prog_bar=True, sync_dist=True, batch_size=inputs["input_ids"].shape[0])

    def configure_optimizers(self):
        groups = self.method.param_groups(self.model, self.lr, self.weight_decay)
        optimizer = torch.optim.AdamW(groups, lr=self.lr)
        scheduler = get_linear_schedule_with_warmup(
            optimizer, int(self.warmup_ratio * self.max_steps), max(self.max_steps, 1)
        )
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}
