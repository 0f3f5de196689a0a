"""One progress bar per training phase, counted in optimizer steps.

Lightning's bars count batches per epoch ("Epoch 4/-2" for a step-bounded run of unknown epoch
count). compbench trains every phase for ``max_steps``, so the bar shows the phase's name and
``step/max_steps`` across epochs, resumed runs starting at their checkpoint's step.
"""

from __future__ import annotations

import sys
from typing import Any

from lightning.pytorch.callbacks import TQDMProgressBar


class StepProgressBar(TQDMProgressBar):
    """A TQDM bar over the whole phase: ``<phase> 120/300 [..] loss=...``; no validation bars."""

    def __init__(self, phase: str):
        super().__init__(refresh_rate=1)
        self.phase = phase

    def init_train_tqdm(self):
        bar = super().init_train_tqdm()
        bar.file = sys.stderr
        return bar

    def on_train_start(self, trainer, pl_module) -> None:
        self.train_progress_bar = self.init_train_tqdm()
        self.train_progress_bar.reset(total=trainer.max_steps)
        self.train_progress_bar.initial = trainer.global_step
        self.train_progress_bar.set_description(self.phase)

    def on_train_epoch_start(self, trainer, *_: Any) -> None:
        """One bar for all epochs (the base class starts a new one per epoch)."""

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx: int) -> None:
        step = trainer.global_step
        if self._should_update(step, trainer.max_steps):
            self.train_progress_bar.n = step
            self.train_progress_bar.set_postfix(self.get_metrics(trainer, pl_module), refresh=True)

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        """Keep the bar open across epochs."""

    def on_validation_start(self, trainer, pl_module) -> None:
        """No bar for the short periodic validation passes."""

    def on_validation_batch_start(self, *args: Any, **kwargs: Any) -> None:
        pass

    def on_validation_batch_end(self, *args: Any, **kwargs: Any) -> None:
        pass

    def on_validation_end(self, trainer, pl_module) -> None:
        if self.train_progress_bar is not None and trainer.state.fn == "fit":
            self.train_progress_bar.set_postfix(self.get_metrics(trainer, pl_module), refresh=True)

    def get_metrics(self, trainer, pl_module) -> dict[str, Any]:
        metrics = super().get_metrics(trainer, pl_module)
        metrics.pop("v_num", None)
        return metrics
