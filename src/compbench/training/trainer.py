"""The Lightning side of every training phase (fine-tuning, compression training, pretraining):
the Trainer's construction and one phase run with the one LightningModule, resumable from its
rolling checkpoint and stopped cleanly on SIGTERM."""

from __future__ import annotations

import sys
from pathlib import Path

import lightning as L
import torch
from omegaconf import DictConfig

from compbench.configs import to_dict
from compbench.errors import Preempted, TrainingDiverged
from compbench.methods import Method
from compbench.tasks.base import Task
from compbench.tracking import Tracker
from compbench.training.module import CompressionModule
from compbench.training.preemption import PreemptionCheckpoint, PreemptionGuard
from compbench.training.progress import StepProgressBar
from compbench.training.resume import checkpoint_callback, resumable_checkpoint


def checkpoint_root(cfg: DictConfig) -> Path:
    """Where resumable training checkpoints go (``paths.checkpoints_dir``)."""
    return Path(cfg.paths.get("checkpoints_dir") or Path(cfg.paths.output_dir) / "checkpoints")


def make_trainer(cfg: DictConfig, run_dir: Path, phase: str, max_steps: int, val_every: int,
                 loggers: list | None = None, ckpt_dir: Path | None = None) -> L.Trainer:
    """A Lightning Trainer for one training phase, with the given loggers and, when ``ckpt_dir``
    is set, a rolling checkpoint there every ``resume.every_n_steps``."""
    trainer_kwargs = to_dict(cfg.trainer)
    callbacks = []
    # A step-counted bar on a terminal; none in logs and pipes (run.log records the phase).
    if trainer_kwargs.get("enable_progress_bar", True) and sys.stderr.isatty():
        callbacks.append(StepProgressBar(phase))
    else:
        trainer_kwargs["enable_progress_bar"] = False
    if ckpt_dir is not None:
        callbacks.append(checkpoint_callback(ckpt_dir, int(cfg.resume.every_n_steps)))
        trainer_kwargs["enable_checkpointing"] = True
    return L.Trainer(
        max_steps=max_steps,
        logger=loggers or False,
        callbacks=callbacks,
        default_root_dir=str(run_dir / phase),
        val_check_interval=max(1, min(val_every, max_steps)),
        check_val_every_n_epoch=None,
        **trainer_kwargs,
    )


def train_phase(cfg: DictConfig, run_dir: Path, task: Task, model: torch.nn.Module, method: Method | None,
                phase: str, max_steps: int, lr: float, teacher: torch.nn.Module | None = None,
                ckpt_dir: Path | None = None, tracker: Tracker | None = None,
                guard: PreemptionGuard | None = None) -> list[float]:
    """Train ``model`` in place for ``max_steps`` on ``task`` with the one LightningModule,
    continuing from the checkpoint in ``ckpt_dir`` when an earlier attempt of this phase left one
    (``resume.enabled``); returns the wall time of each step run, s.

    ``method=None`` fine-tunes; ``tracker`` gives the phase's loggers; while training, ``guard``
    hands SIGTERM to Lightning (stop after this step, checkpoint, raise :class:`Preempted`).
    """
    ft = cfg.finetune
    module = CompressionModule(model, method, teacher=teacher, lr=lr, weight_decay=ft.weight_decay,
                               warmup_ratio=ft.warmup_ratio, max_steps=max_steps)
    if not cfg.resume.enabled:
        ckpt_dir = None
    loggers = tracker.phase_loggers(phase) if tracker is not None else []
    trainer = make_trainer(cfg, run_dir, phase, max_steps, ft.val_every_n_steps, loggers, ckpt_dir)
    on_sigterm = PreemptionCheckpoint(ckpt_dir)
    trainer.callbacks.append(on_sigterm)
    ckpt_path = resumable_checkpoint(ckpt_dir) if ckpt_dir is not None else None
    if guard is not None:
        guard.training = True  # Lightning's SIGTERM handler takes over: stop after this step
    try:
        # Our checkpoints hold tensors and plain types only, so the safe loader reads them.
        trainer.fit(module, train_dataloaders=task.train_dataloader(), val_dataloaders=task.val_dataloader(),
                    ckpt_path=ckpt_path, weights_only=True)
    except FloatingPointError as exc:
        lr_key = "finetune.lr" if method is None else "the method's learning rate"
        raise TrainingDiverged(
            f"training phase {phase} diverged ({exc}); lower {lr_key} or set trainer.gradient_clip_val=1.0."
        ) from exc
    except SystemExit as exc:  # Lightning's SIGTERMException
        if not trainer.received_sigterm:
            raise
        where = f"checkpoint {on_sigterm.saved}" if on_sigterm.saved else "no checkpoint (resume is disabled)"
        raise Preempted(f"received SIGTERM (pre-emption) in training phase {phase} at step {trainer.global_step}; "
                        f"saved {where}; re-run the same command to resume.") from exc
    finally:
        if guard is not None:
            guard.training = False
    model.eval()
    return module.step_times_s
