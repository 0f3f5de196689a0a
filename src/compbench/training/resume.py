"""Resuming: skip runs that are done, and continue a killed training phase from its checkpoint.

Two levels, so that re-running a sweep command finishes the sweep (Hydra has no "resume a
sweep", facebookresearch/hydra#1407):

* a run whose ``config_hash`` already has an ``ok`` row in the store is skipped (``force=true``
  recomputes it);
* a training phase writes a Lightning checkpoint every ``resume.every_n_steps`` to a folder
  named by what determines it (the teacher key for fine-tuning, the config hash for
  compression phases), not by the run id, so the next attempt of the same config finds it.
  The folder is deleted once the phase's result is safely stored.
"""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch.callbacks import ModelCheckpoint

from compbench.records.store import ResultsStore

log = logging.getLogger(__name__)

CHECKPOINT_NAME = "last"


def done_row(db: Path, config_hash: str) -> dict[str, Any] | None:
    """The latest ``ok`` row stored for ``config_hash``, or None when it still has to run."""
    return ResultsStore(db).latest_by_config_hash(status="ok").get(config_hash)


class AtomicModelCheckpoint(ModelCheckpoint):
    """``ModelCheckpoint`` that writes to a temporary name and renames it into place, so a kill
    while writing leaves the previous checkpoint intact instead of a truncated one."""

    def _save_checkpoint(self, trainer, filepath: str) -> None:
        tmp = f"{filepath}.{os.getpid()}.tmp"
        super()._save_checkpoint(trainer, tmp)
        os.replace(tmp, filepath)
        self._last_checkpoint_saved = filepath


def checkpoint_callback(ckpt_dir: Path, every_n_steps: int) -> ModelCheckpoint:
    """Keeps one rolling ``last.ckpt`` in ``ckpt_dir``, rewritten every ``every_n_steps``."""
    return AtomicModelCheckpoint(
        dirpath=str(ckpt_dir), filename=CHECKPOINT_NAME, every_n_train_steps=every_n_steps, save_top_k=1,
        enable_version_counter=False, save_on_train_epoch_end=False,
    )


def resumable_checkpoint(ckpt_dir: Path) -> Path | None:
    """``last.ckpt`` in ``ckpt_dir`` if it is readable; an unreadable one is removed.

    A kill while Lightning writes the file can leave it truncated; loading it once here (tensors
    and plain types only) means a broken checkpoint costs a restart instead of a crash loop.
    """
    path = Path(ckpt_dir) / f"{CHECKPOINT_NAME}.ckpt"
    if not path.is_file():
        return None
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
        step = int(state.get("global_step", 0))
    except Exception as exc:  # a truncated or foreign file: start the phase over
        log.warning("Checkpoint %s is unreadable (%s); starting the phase over", path, exc)
        path.unlink(missing_ok=True)
        return None
    log.info("Resuming from checkpoint %s at step %d", path, step)
    return path


def clear_checkpoints(ckpt_dir: Path) -> None:
    """Delete a phase's (or run's) checkpoints once its result is stored."""
    shutil.rmtree(ckpt_dir, ignore_errors=True)
