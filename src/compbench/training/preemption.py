"""SIGTERM (what SLURM and most schedulers send before pre-emption): stop cleanly, resumably.

During a training phase Lightning's own SIGTERM handler flags the trainer; the
``PreemptionCheckpoint`` callback then writes the phase's resumable checkpoint at the end of the
current step, Lightning stops with ``SIGTERMException`` and the pipeline reports ``Preempted``.
Outside training (loading, evaluation, export) ``PreemptionGuard`` raises ``Preempted`` at once.
Either way the run ends as a ``failed`` row that says it was pre-empted, and re-running the same
command resumes: the row is not ``ok``, so a sweep does not skip it, and the checkpoint is
found by the teacher key / config hash.
"""

from __future__ import annotations

import logging
import os
import signal
from pathlib import Path
from typing import Any

from lightning.pytorch.callbacks import Callback

from compbench.errors import Preempted

log = logging.getLogger(__name__)


class PreemptionGuard:
    """Context manager: SIGTERM outside a training phase raises ``Preempted`` in the main thread.

    ``training`` is set while Lightning trains (its handler, which calls ours too, takes over);
    ``disarm()`` makes a late SIGTERM wait until the row is stored.
    """

    def __init__(self) -> None:
        self.training = False
        self.armed = True
        self.received = False
        self._previous: Any = None

    def _handler(self, signum: int, frame: Any) -> None:
        self.received = True
        if self.armed and not self.training:
            raise Preempted("received SIGTERM (pre-emption) outside training; re-run the same command to redo this run.")

    def disarm(self) -> None:
        self.armed = False

    def __enter__(self) -> "PreemptionGuard":
        try:
            self._previous = signal.signal(signal.SIGTERM, self._handler)
        except ValueError:  # not the main thread (e.g. a thread-based launcher): leave signals alone
            self._previous = None
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGTERM, self._previous)


class PreemptionCheckpoint(Callback):
    """On SIGTERM, write ``<ckpt_dir>/last.ckpt`` at the end of the current step (atomically)."""

    def __init__(self, ckpt_dir: Path | None) -> None:
        self.ckpt_dir = Path(ckpt_dir) if ckpt_dir is not None else None
        self.saved: Path | None = None

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if not trainer.received_sigterm or self.saved is not None or self.ckpt_dir is None:
            return
        self.ckpt_dir.mkdir(parents=True, exist_ok=True)
        final = self.ckpt_dir / "last.ckpt"
        tmp = self.ckpt_dir / f".last.ckpt.{os.getpid()}.tmp"
        trainer.save_checkpoint(tmp)
        os.replace(tmp, final)
        self.saved = final
        log.info("SIGTERM: checkpoint of step %d saved to %s", trainer.global_step, final)
