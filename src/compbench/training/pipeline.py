"""One run: plan → pretrained model (if any) → teacher (cached or fine-tuned) → method chain →
export → evaluate → row.

Data flows one way: :func:`compbench.training.plan.build_plan` builds and validates every object
once, and each stage below receives what it needs and returns what it made. Every run ends as
exactly one row in the results store and a ``record.json`` in its run directory, written by
``records.run_record`` in a ``finally`` so that failures are rows too.
"""

from __future__ import annotations

import copy
import errno
import logging
import os
import shutil
import time
import traceback
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import lightning as L
import torch
from omegaconf import DictConfig, OmegaConf

from compbench.configs import to_dict
from compbench.errors import ConfigError, DiskFull
from compbench.methods import Method, MethodContext
from compbench.methods.export import artifact_size_bytes, load_export
from compbench.methods.lifecycle import compress
from compbench.metrics.efficiency import fp32_reference_bytes, training_cost
from compbench.metrics.extra import extra_quality
from compbench.records.run_record import identity_columns, new_run_id, run_record
from compbench.records.schema import config_hash, error_summary, flatten_method_params, method_label
from compbench.records.store import ResultsStore
from compbench.tracking import Tracker
from compbench.training.evaluation import evaluate_all
from compbench.training.plan import RunPlan, build_plan, data_fingerprints
from compbench.training.preemption import PreemptionGuard
from compbench.training.pretrain import pretrained_checkpoint
from compbench.training.resume import clear_checkpoints
from compbench.training.teacher import get_or_train_teacher, teacher_key
from compbench.training.trainer import checkpoint_root, train_phase

log = logging.getLogger(__name__)


@dataclass
class Teacher:
    """What the teacher stage returns: the fine-tuned fp32 model and where it is cached."""

    model: torch.nn.Module
    path: Path
    key: str
    reused: bool
    train_time_s: float | None


@dataclass
class RunEnv:
    """Where a run's stages write and report: its directory, tracker and SIGTERM guard."""

    run_dir: Path
    config_hash: str
    tracker: Tracker | None = None
    guard: PreemptionGuard | None = None
    #: Durations of the compression-training steps, s (for the eff.train_* columns).
    step_times_s: list[float] = field(default_factory=list)


# --------------------------------------------------------------------------- stages
def prepare_pretrained(plan: RunPlan) -> str:
    """A model config with a ``pretrain:`` block starts from its pretrained checkpoint (cached, or
    pretrained now, which stores its own ``task=pretrain`` row under a run_id of its own); returns
    its cache key ("" without)."""
    if plan.pretrain is None:
        return ""
    path, key, _ = pretrained_checkpoint(plan.spec.name, plan.family, dict(plan.spec.tiny or {}), plan.pretrain,
                                         plan.cfg, new_run_id())
    plan.spec.name_or_path = str(path)
    return key


def prepare_teacher(plan: RunPlan, env: RunEnv, tokenizer: Any, data_fingerprint: str,
                    pretrain_key: str) -> Teacher:
    """The fine-tuned baseline, from the cache or freshly fine-tuned (and then cached)."""
    cfg, spec, task = plan.cfg, plan.spec, plan.task
    ft = cfg.finetune
    finetune_cfg = to_dict(ft) if ft.enabled else {"enabled": False}
    model_cfg = to_dict(cfg.model)
    if pretrain_key:  # the pretrained checkpoint's own key covers its corpus's content
        model_cfg["pretrain_key"] = pretrain_key
    key = teacher_key(model_cfg, to_dict(cfg.task), plan.seed, finetune_cfg, data_fingerprint)

    # Named by the teacher key: any run needing this teacher continues a killed fine-tuning.
    ckpt_dir = checkpoint_root(cfg) / f"teacher-{key}"

    def train():
        L.seed_everything(plan.seed, workers=True, verbose=False)
        model = spec.build_model(task, tokenizer, plan.seed)
        if ft.enabled:
            train_phase(cfg, env.run_dir, task, model, None, "finetune", int(ft.max_steps), float(ft.lr),
                        ckpt_dir=ckpt_dir, tracker=env.tracker, guard=env.guard)
        return model, {"max_steps": int(ft.max_steps) if ft.enabled else 0}

    def load(path: Path):
        return task.auto_model_class().from_pretrained(path).eval()

    model, path, reused, info = get_or_train_teacher(Path(cfg.paths.cache_dir) / "teachers", key, train, load,
                                                  tokenizer)
    if not reused:  # the teacher is cached now; its fine-tuning checkpoint has served
        clear_checkpoints(ckpt_dir)
    return Teacher(model.eval(), path, key, reused, info.get("train_time_s") if ft.enabled else None)


def apply_methods(plan: RunPlan, env: RunEnv, teacher: torch.nn.Module, tokenizer: Any
                  ) -> tuple[torch.nn.Module, MethodContext]:
    """Run the method chain on a copy of the teacher (``methods.lifecycle.compress``, training each
    stage with the LightningModule); returns the finalized model and the last stage's context."""
    cfg = plan.cfg
    distil_from = teacher if plan.has_teacher else None

    def context(index: int, method: Method) -> MethodContext:  # a fresh one per stage
        return plan.method_context(teacher=distil_from, tokenizer=tokenizer,
                                   pretrained_loader=lambda: plan.spec.build_model(plan.task, tokenizer, plan.seed))

    def train(model: torch.nn.Module, method: Method, index: int) -> None:
        phase = f"compress_{index}_{method.name}"
        env.step_times_s += train_phase(cfg, env.run_dir, plan.task, model, method, phase, method.training_steps,
                                        method.learning_rate, teacher=distil_from,
                                        ckpt_dir=checkpoint_root(cfg) / env.config_hash / phase,
                                        tracker=env.tracker, guard=env.guard)

    return compress(copy.deepcopy(teacher), plan.methods, context, train,
                    before_prepare=lambda index: L.seed_everything(plan.seed + index, workers=True, verbose=False))


def write_export(run_dir: Path, method: Method, model: torch.nn.Module, mctx: MethodContext, tokenizer: Any) -> Path:
    """The method's artifact and the tokenizer, written under a temporary name and renamed into
    ``<run_dir>/export`` when complete: a killed or full-disk write never leaves an export that
    looks whole."""
    final = run_dir / "export"
    tmp = run_dir / "export.partial"
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        method.export(model, tmp, mctx)
        tokenizer.save_pretrained(tmp / "tokenizer")
    except Exception as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        # safetensors reports the OS error inside its own exception type ("os error 28").
        codes = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)
        code = getattr(exc, "errno", None) if getattr(exc, "errno", None) in codes else next(
            (n for n in codes if f"os error {n}" in str(exc)), None)
        if code is not None:
            raise DiskFull(f"the disk is full while writing the export in {run_dir} ({os.strerror(code)}); "
                           "free space there or set paths.output_dir to a roomier disk, then re-run.") from exc
        raise
    shutil.rmtree(final, ignore_errors=True)
    tmp.rename(final)
    return final


def evaluate(plan: RunPlan, run_dir: Path, export_dir: Path, model: torch.nn.Module, teacher: Teacher
             ) -> dict[str, Any]:
    """Every metric group of the compressed model (reloaded from its export unless
    ``evaluation.evaluate_reloaded_export=false``) against the fp32 teacher, plus extra metrics."""
    cfg, device = plan.cfg, plan.eval_device
    if cfg.evaluation.evaluate_reloaded_export:
        model = load_export(export_dir)
    baseline = teacher.model.to(device)  # the fp32 model the latency ratio is measured against
    row = evaluate_all(plan.task, model.to(device), baseline, plan.family, run_dir, cfg.evaluation,
                       plan.ood_tasks, size_bytes=artifact_size_bytes(export_dir),
                       reference_bytes=fp32_reference_bytes(teacher.path), eff_mode=plan.methods[-1].eff_mode)
    if plan.extra_metrics:
        row.update(extra_quality(plan.extra_metrics, *plan.task.saved_predictions(run_dir)))
    return row


def execute(cfg: DictConfig, conf_dir: Path | None, env: RunEnv, row: dict[str, Any], resolved: dict[str, Any]) -> None:
    """The stages of one run, filling ``row`` as they go (the caller records it); ``resolved`` is
    ``cfg`` resolved to plain containers."""
    # First, so that an online W&B run without credentials fails before any work.
    env.tracker = Tracker(cfg.logger, env.run_dir)
    plan = build_plan(cfg, conf_dir)
    row["main_metric"] = plan.task.main_metric
    # The data read keys the run: edited files under the same data_dir are a new config.
    teacher_data, run_data = data_fingerprints(plan.task, plan.ood_tasks, Path(cfg.paths.cache_dir))
    env.config_hash = config_hash(resolved, data_fingerprint=run_data)
    row.update(config_hash=env.config_hash, data_fingerprint=run_data)
    log.info("Config %s, data %s", env.config_hash, teacher_data)
    env.tracker.start(resolved, row, group=row["sweep_id"])
    stages = [(m.name, m.row_params()) for m in plan.methods]
    row["method"] = method_label(stages)
    row.update(flatten_method_params(stages))

    plan.task.load()  # logs each split's size and source once
    pretrain_key = prepare_pretrained(plan)
    tokenizer = plan.spec.build_tokenizer(plan.task, Path(cfg.paths.cache_dir))
    plan.task.setup(tokenizer)
    teacher = prepare_teacher(plan, env, tokenizer, teacher_data, pretrain_key)
    row.update(teacher_hash=teacher.key, teacher_reused=teacher.reused)
    compress_start = time.perf_counter()
    model, mctx = apply_methods(plan, env, teacher.model, tokenizer)
    row.update(training_cost(time.perf_counter() - compress_start, env.step_times_s, teacher.train_time_s))
    export_dir = write_export(env.run_dir, plan.methods[-1], model, mctx, tokenizer)
    row.update(evaluate(plan, env.run_dir, export_dir, model, teacher))
    row["status"] = "ok"


# --------------------------------------------------------------------------- one run
def run_directory(cfg: DictConfig, run_id: str) -> Path:
    """``<paths.runs_dir>/<run_id>_<model>_<task>``, created; absolute, so that the stored run_dir
    is found from any working directory (reports, notebooks)."""
    run_dir = (Path(cfg.paths.runs_dir) / f"{run_id}_{cfg.model.name}_{cfg.task.name}").resolve()
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"cannot create the run directory {run_dir} ({exc.strerror}); "
                          "set paths.output_dir to a writable folder.") from exc
    return run_dir


@contextmanager
def run_log(run_dir: Path) -> Iterator[None]:
    """Every log record of the run also goes to ``<run_dir>/run.log``."""
    handler = logging.FileHandler(run_dir / "run.log")
    handler.setFormatter(logging.Formatter("[%(asctime)s][%(name)s][%(levelname)s] - %(message)s"))
    logging.getLogger().addHandler(handler)
    try:
        yield
    finally:
        logging.getLogger().removeHandler(handler)
        handler.close()


def run(cfg: DictConfig, conf_dir: Path | None = None, *, debug: str = "") -> tuple[dict[str, Any], Exception | None]:
    """Execute one run; return its row (also stored and written to ``record.json``) and the
    exception that failed it, if any (the caller decides whether to re-raise).

    ``debug`` is the ``debug`` column: the ``debug`` config chosen (``fast``), else empty; reports
    leave such rows out by default (a debug run checks that a configuration runs, not how well).
    """
    run_id = new_run_id()
    started = time.time()
    if isinstance(cfg.get("threads"), int) and cfg.threads > 0:
        torch.set_num_threads(int(cfg.threads))
    run_dir = run_directory(cfg, run_id)
    ResultsStore(Path(cfg.paths.db)).check_usable()  # a broken store is refused before any work
    resolved = OmegaConf.to_container(cfg, resolve=True)
    env = RunEnv(run_dir=run_dir, config_hash=config_hash(resolved))
    row = identity_columns(
        run_id=run_id, config_hash=env.config_hash, sweep_id=str(cfg.get("sweep_id") or ""), run_dir=run_dir,
        model=str(cfg.model.name), task=str(cfg.task.name), lang=str(cfg.task.get("lang") or ""),
        method=str(cfg.method.get("name", "")), seed=cfg.seed if isinstance(cfg.seed, int) else None,
        debug=debug,
    )
    error: Exception | None = None
    with run_log(run_dir), PreemptionGuard() as guard:
        env.guard = guard
        try:
            with run_record(Path(cfg.paths.db), run_dir, row, resolved, started=started):
                try:
                    log.info("Run %s in %s", run_id, run_dir)
                    execute(cfg, conf_dir, env, row, resolved)
                except Exception as exc:  # every failure becomes a row
                    error = exc
                    row["error"] = error_summary(exc)
                    log.error("Run %s failed: %s", run_id, row["error"])
                    (run_dir / "traceback.txt").write_text(traceback.format_exc())
                finally:
                    guard.disarm()  # a SIGTERM from here on waits until the row is stored
            if row["status"] == "ok":  # stored: the next attempt skips this config, so drop its checkpoints
                clear_checkpoints(checkpoint_root(cfg) / env.config_hash)
        finally:
            if env.tracker is not None:
                try:
                    env.tracker.finish(row)
                except Exception as exc:  # tracking must not turn a stored result into a crash
                    log.error("W&B could not finish run %s: %s", run_id, error_summary(exc))
    return row, error
