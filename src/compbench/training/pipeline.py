"""One run: validate → teacher (cached or fine-tuned) → method chain → export → evaluate → row.

Data flows one way. Every run ends as exactly one row in the results store and a
``record.json`` in its run directory, written in a ``finally`` so that failures are rows too.
"""

from __future__ import annotations

import copy
import errno
import json
import logging
import os
import shutil
import sys
import time
import traceback
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import lightning as L
import torch
from omegaconf import DictConfig, OmegaConf

from compbench.configs import build_dataclass, check_run_settings, ood_task_configs, to_dict
from compbench.errors import ConfigError, Preempted, TrainingDiverged
from compbench.methods import Method, MethodContext, build_methods
from compbench.methods.export import artifact_size_bytes, load_export
from compbench.methods.lifecycle import compress
from compbench.metrics.efficiency import fp32_reference_bytes, training_cost
from compbench.metrics.extra import extra_quality, load_extra_metrics
from compbench.models.loader import ModelSpec
from compbench.records.provenance import provenance
from compbench.records.schema import (
    RowError, config_hash, error_summary, flatten_method_params, method_label, utc_timestamp,
)
from compbench.records.store import ResultsStore
from compbench.tasks.base import Task
from compbench.tracking import Tracker
from compbench.training.evaluation import evaluate_all
from compbench.training.module import CompressionModule
from compbench.training.preemption import PreemptionCheckpoint, PreemptionGuard
from compbench.training.progress import StepProgressBar
from compbench.training.pretrain import PretrainSpec, objective_of, pretrained_checkpoint
from compbench.training.resume import checkpoint_callback, clear_checkpoints, resumable_checkpoint
from compbench.training.teacher import get_or_train_teacher, teacher_key

log = logging.getLogger(__name__)


@dataclass
class RunContext:
    """What one run builds, handed from stage to stage."""

    cfg: DictConfig
    run_id: str
    run_dir: Path
    config_hash: str = ""
    tracker: Tracker | None = None
    spec: ModelSpec | None = None
    task: Task | None = None
    methods: list[Method] = field(default_factory=list)
    family: str = ""
    tokenizer: Any = None
    teacher: torch.nn.Module | None = None
    teacher_dir: Path | None = None
    data_fingerprint: str = ""
    guard: PreemptionGuard | None = None
    teacher_time_s: float | None = None
    #: Durations of the compression-training steps, s (for the eff.train_* columns).
    step_times_s: list[float] = field(default_factory=list)
    pretrain: PretrainSpec | None = None
    pretrain_key: str = ""


def new_run_id() -> str:
    """Sortable, unique: UTC timestamp plus 8 random hex digits."""
    return time.strftime("%Y%m%d-%H%M%S", time.gmtime()) + "-" + uuid.uuid4().hex[:8]


def compatible_models(conf_dir: Path | None, family_needed: tuple[str, ...]) -> list[str]:
    """Names of the model configs under ``conf/model`` whose family is in ``family_needed``."""
    if conf_dir is None:
        return []
    names = []
    for path in sorted((Path(conf_dir) / "model").glob("*.yaml")):
        family = OmegaConf.load(path).get("family")
        if family in family_needed:
            names.append(path.stem)
    return names


def article(word: str) -> str:
    """``a`` or ``an`` before ``word`` (by its first letter: "an encoder", "a decoder")."""
    return "an" if word[:1].lower() in "aeiou" else "a"


def check_compatible(spec: ModelSpec, family: str, task: Task, conf_dir: Path | None) -> None:
    """Refuse a model × task combination that cannot work, naming the compatible models."""
    if family in task.supported_families:
        return
    options = compatible_models(conf_dir, task.supported_families)
    raise ConfigError(
        f"task '{task.name}' ({task.kind}) needs {article(task.supported_families[0])} "
        f"{' or '.join(task.supported_families)} model, "
        f"but model '{spec.name}' is {family}; compatible models: {', '.join(options) or 'any such hub id'}."
    )


# --------------------------------------------------------------------------- stages
def method_device(cfg: DictConfig) -> torch.device:
    """The device the method chain runs on: CUDA when present and ``trainer.accelerator`` allows
    it (Lightning trains there too), else the CPU. Methods see it as ``MethodContext.device``."""
    accelerator = str(cfg.trainer.get("accelerator", "auto")).lower()
    return torch.device("cuda" if torch.cuda.is_available() and accelerator in ("auto", "gpu", "cuda") else "cpu")


def finetune_budget(cfg: DictConfig) -> dict[str, Any]:
    """The teacher's fine-tuning budget as ``MethodContext`` fields (None without fine-tuning)."""
    if not cfg.finetune.enabled:
        return {"finetune_steps": None, "finetune_lr": None}
    return {"finetune_steps": int(cfg.finetune.max_steps), "finetune_lr": float(cfg.finetune.lr)}


def build_components(ctx: RunContext, conf_dir: Path | None) -> None:
    """Build and validate model spec, task and methods; nothing expensive happens here."""
    cfg = ctx.cfg
    check_run_settings(cfg)
    ctx.spec = build_dataclass(cfg.model, "model")
    ctx.task = build_dataclass(cfg.task, "task")
    ctx.methods = build_methods(cfg.method)
    ctx.family = ctx.spec.resolve_family()
    check_compatible(ctx.spec, ctx.family, ctx.task, conf_dir)
    if ctx.spec.pretrain is not None:
        ctx.pretrain = build_dataclass({"_target_": f"{PretrainSpec.__module__}.PretrainSpec", **ctx.spec.pretrain},
                                       "model.pretrain")
        ctx.pretrain.check_corpus()
        objective_of(ctx.family)
    ctx.task.check_data()
    context = ctx.spec.context_length()
    if context is not None and ctx.task.max_length > context:
        raise ConfigError(f"task.max_length={ctx.task.max_length} exceeds the {context}-token context of model "
                          f"'{ctx.spec.name}'; set task.max_length={context} or less.")
    teacher_available = bool(cfg.finetune.enabled)
    for method in ctx.methods:
        method.check(MethodContext(family=ctx.family, task=ctx.task, teacher_available=teacher_available,
                                   seed=cfg.seed, device=method_device(cfg), **finetune_budget(cfg)))
    if teacher_available and any(m.requires_teacher for m in ctx.methods):
        # Checks against the teacher's architecture (a KD student deeper than its teacher) run
        # now on a weightless skeleton, not after fine-tuning; they run again on the real teacher.
        try:
            skeleton = ctx.spec.skeleton(ctx.task)
        except Exception as exc:  # noqa: BLE001 - no skeleton (exotic architecture): the later check still runs
            log.debug("No meta-device skeleton of %s: %s", ctx.spec.name, exc)
            skeleton = None
        for method in ctx.methods:
            if skeleton is not None and method.requires_teacher:
                try:
                    method.check(MethodContext(family=ctx.family, task=ctx.task, teacher=skeleton,
                                               teacher_available=True, seed=cfg.seed,
                                               device=method_device(cfg), **finetune_budget(cfg)))
                except ConfigError:
                    raise
                except Exception as exc:  # noqa: BLE001 - a check that needs real weights runs later
                    log.debug("Check of %s on the skeleton skipped: %s", method.name, exc)


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


def train_phase(ctx: RunContext, model, method: Method | None, phase: str, max_steps: int, lr: float,
                teacher=None, ckpt_dir: Path | None = None) -> list[float]:
    """Train ``model`` in place for ``max_steps`` with the one LightningModule, continuing from
    the checkpoint in ``ckpt_dir`` when an earlier attempt of this phase left one; returns the
    wall time of each step run, s."""
    ft = ctx.cfg.finetune
    module = CompressionModule(model, method, teacher=teacher, lr=lr, weight_decay=ft.weight_decay,
                               warmup_ratio=ft.warmup_ratio, max_steps=max_steps)
    if not ctx.cfg.resume.enabled:
        ckpt_dir = None
    loggers = ctx.tracker.phase_loggers(phase) if ctx.tracker is not None else []
    trainer = make_trainer(ctx.cfg, ctx.run_dir, phase, max_steps, ft.val_every_n_steps, loggers, ckpt_dir)
    on_sigterm = PreemptionCheckpoint(ckpt_dir)
    trainer.callbacks.append(on_sigterm)
    ckpt_path = resumable_checkpoint(ckpt_dir) if ckpt_dir is not None else None
    if ctx.guard is not None:
        ctx.guard.training = True  # Lightning's SIGTERM handler takes over: stop after this step
    try:
        # Our checkpoints hold tensors and plain types only, so the safe loader reads them.
        trainer.fit(module, train_dataloaders=ctx.task.train_dataloader(), val_dataloaders=ctx.task.val_dataloader(),
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
        if ctx.guard is not None:
            ctx.guard.training = False
    model.eval()
    return module.step_times_s


def checkpoint_root(cfg: DictConfig) -> Path:
    """Where resumable training checkpoints go (``paths.checkpoints_dir``)."""
    return Path(cfg.paths.get("checkpoints_dir") or Path(cfg.paths.output_dir) / "checkpoints")


def prepare_teacher(ctx: RunContext, row: dict[str, Any]) -> None:
    """The fine-tuned baseline, from the cache or freshly fine-tuned (and then cached)."""
    cfg, spec, task = ctx.cfg, ctx.spec, ctx.task
    ft = cfg.finetune
    finetune_cfg = to_dict(ft) if ft.enabled else {"enabled": False}
    model_cfg = to_dict(cfg.model)
    if ctx.pretrain_key:  # the pretrained checkpoint's own key covers its corpus's content
        model_cfg["pretrain_key"] = ctx.pretrain_key
    key = teacher_key(model_cfg, to_dict(cfg.task), int(cfg.seed), finetune_cfg, ctx.data_fingerprint)

    # Named by the teacher key: any run needing this teacher continues a killed fine-tuning.
    ckpt_dir = checkpoint_root(cfg) / f"teacher-{key}"

    def train():
        L.seed_everything(int(cfg.seed), workers=True, verbose=False)
        model = spec.build_model(task, ctx.tokenizer, int(cfg.seed))
        if ft.enabled:
            train_phase(ctx, model, None, "finetune", int(ft.max_steps), float(ft.lr), ckpt_dir=ckpt_dir)
        return model, {"max_steps": int(ft.max_steps) if ft.enabled else 0}

    def load(path: Path):
        return task.auto_model_class().from_pretrained(path).eval()

    model, path, reused, info = get_or_train_teacher(Path(cfg.paths.cache_dir) / "teachers", key, train, load,
                                                  ctx.tokenizer)
    if not reused:  # the teacher is cached now; its fine-tuning checkpoint has served
        clear_checkpoints(ckpt_dir)
    ctx.teacher, ctx.teacher_dir = model.eval(), path
    ctx.teacher_time_s = info.get("train_time_s") if ft.enabled else None
    row.update(teacher_hash=key, teacher_reused=reused)


def prepare_pretrained(ctx: RunContext) -> None:
    """A model config with a ``pretrain:`` block starts from its pretrained checkpoint (cached, or
    pretrained now, which stores its own ``task=pretrain`` row)."""
    if ctx.pretrain is None:
        return
    path, ctx.pretrain_key, _ = pretrained_checkpoint(ctx.spec.name, ctx.family, dict(ctx.spec.tiny or {}), ctx.pretrain,
                                                      ctx.cfg, make_trainer, new_run_id())
    ctx.spec.name_or_path = str(path)


def apply_methods(ctx: RunContext) -> tuple[torch.nn.Module, MethodContext]:
    """Run the method chain on a copy of the teacher (``methods.lifecycle.compress``, training each
    stage with the LightningModule); returns the finalized model and the last stage's context."""
    cfg = ctx.cfg
    teacher = ctx.teacher if cfg.finetune.enabled else None

    def context(index: int, method: Method) -> MethodContext:
        return MethodContext(
            family=ctx.family, task=ctx.task, teacher=teacher, tokenizer=ctx.tokenizer,
            device=method_device(cfg), seed=int(cfg.seed),
            pretrained_loader=lambda: ctx.spec.build_model(ctx.task, ctx.tokenizer, int(cfg.seed)),
            teacher_available=teacher is not None, **finetune_budget(cfg),
        )

    def train(model: torch.nn.Module, method: Method, index: int) -> None:
        phase = f"compress_{index}_{method.name}"
        ctx.step_times_s += train_phase(ctx, model, method, phase, method.training_steps, method.learning_rate,
                                        teacher=teacher, ckpt_dir=checkpoint_root(cfg) / ctx.config_hash / phase)

    return compress(copy.deepcopy(ctx.teacher), ctx.methods, context, train,
                    before_prepare=lambda index: L.seed_everything(int(cfg.seed) + index, workers=True, verbose=False))


def evaluation_device(setting: str, method: Method) -> torch.device:
    """Where the finalized model is evaluated: ``cpu``, ``cuda``, or ``auto`` (CUDA when present
    and the method's kernels run there; ``ptq_dynamic_int8``'s int8 kernels are CPU-only)."""
    if setting not in ("auto", "cpu", "cuda"):
        raise ConfigError(f"evaluation.device={setting!r} is not one of auto, cpu, cuda.")
    cuda_ok = torch.cuda.is_available() and "cuda" in method.inference_devices
    if setting == "cuda" and not cuda_ok:
        reason = "no CUDA device is available" if not torch.cuda.is_available() else \
            f"method '{method.name}' runs on {', '.join(method.inference_devices)} only"
        raise ConfigError(f"evaluation.device=cuda is impossible here: {reason}; use evaluation.device=auto.")
    if setting == "cpu" and "cpu" not in method.inference_devices:
        raise ConfigError(f"method '{method.name}' cannot run on the CPU; use evaluation.device=auto on a CUDA machine.")
    return torch.device("cuda" if setting != "cpu" and cuda_ok else "cpu")


def write_export(ctx: RunContext, model: torch.nn.Module, mctx: MethodContext) -> Path:
    """The method's artifact and the tokenizer, written under a temporary name and renamed into
    ``<run_dir>/export`` when complete: a killed or full-disk write never leaves an export that
    looks whole."""
    final = ctx.run_dir / "export"
    tmp = ctx.run_dir / "export.partial"
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        ctx.methods[-1].export(model, tmp, mctx)
        ctx.tokenizer.save_pretrained(tmp / "tokenizer")
    except Exception as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        # safetensors reports the OS error inside its own exception type ("os error 28").
        codes = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)
        code = getattr(exc, "errno", None) if getattr(exc, "errno", None) in codes else next(
            (n for n in codes if f"os error {n}" in str(exc)), None)
        if code is not None:
            raise ConfigError(f"the disk is full while writing the export in {ctx.run_dir} ({os.strerror(code)}); "
                              "free space there or set paths.output_dir to a roomier disk, then re-run.") from exc
        raise
    shutil.rmtree(final, ignore_errors=True)
    tmp.rename(final)
    return final


def debug_label(cfg: DictConfig) -> str:
    """The ``debug`` column: the ``debug`` config chosen (``fast``), else empty. Reports leave
    such rows out by default: a debug run checks that a configuration runs, not how well."""
    from hydra.core.hydra_config import HydraConfig

    if HydraConfig.initialized():
        choice = HydraConfig.get().runtime.choices.get("debug")
        if choice and str(choice) != "null":
            return str(choice)
    return str(cfg.get("debug_label") or "")


def data_fingerprints(cfg: DictConfig, task: Task, cache_dir: Path) -> tuple[str, str]:
    """(teacher's, run's) data fingerprint: the task's data, and that plus every
    ``evaluation.ood`` test set (whose data is checked here, before any training, too)."""
    main = task.fingerprint(cache_dir)
    ood = {}
    for name, task_cfg in ood_task_configs(cfg).items():
        try:
            other = build_dataclass(task_cfg, f"evaluation.ood.{name} task")
            ood[f"ood.{name}"] = other.fingerprint(cache_dir)
        except ConfigError as exc:
            raise ConfigError(f"out-of-distribution set evaluation.ood.{name}: {exc}") from exc
    if not ood:
        return main, main
    from compbench.tasks.fingerprint import combine

    return main, combine({"task": main, **ood})


def run_fingerprint(cfg: DictConfig, cache_dir: Path | None = None) -> tuple[str, str]:
    """(``config_hash``, ``data_fingerprint``) of a run: its resolved config keyed with the data it reads.

    Cheap on re-runs (file digests are cached by path, size and mtime), so a sweep can ask it of
    every job before deciding to skip one.
    """
    task = build_dataclass(cfg.task, "task")
    _, fingerprint = data_fingerprints(cfg, task, Path(cache_dir or cfg.paths.cache_dir))
    return config_hash(OmegaConf.to_container(cfg, resolve=True), data_fingerprint=fingerprint), fingerprint


def store_row(db: Path, row: dict[str, Any]) -> None:
    """Append the row; a row that breaks the contract is stored as a failed row saying why."""
    store = ResultsStore(db)
    try:
        store.append(row)
    except RowError as exc:
        log.error("Row of run %s breaks the row contract (%s); storing it as failed", row["run_id"], exc)
        keep = ("run_id", "config_hash", "sweep_id", "started_at", "duration_s", "run_dir", "model", "task",
                "lang", "method", "seed")
        store.append({**{k: row.get(k) for k in keep}, **provenance(), "status": "failed",
                      "error": error_summary(exc)})


def run(cfg: DictConfig, conf_dir: Path | None = None) -> tuple[dict[str, Any], Exception | None]:
    """Execute one run; return its row (also stored and written to ``record.json``) and the
    exception that failed it, if any (the caller decides whether to re-raise)."""
    run_id = new_run_id()
    started = time.time()
    if isinstance(cfg.get("threads"), int) and cfg.threads > 0:
        torch.set_num_threads(int(cfg.threads))
    # Absolute, so that the stored run_dir is found from any working directory (reports, notebooks).
    run_dir = (Path(cfg.paths.runs_dir) / f"{run_id}_{cfg.model.name}_{cfg.task.name}").resolve()
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"cannot create the run directory {run_dir} ({exc.strerror}); "
                          "set paths.output_dir to a writable folder.") from exc
    ResultsStore(Path(cfg.paths.db)).check_usable()  # a broken store is refused before any work
    resolved = OmegaConf.to_container(cfg, resolve=True)
    hash_ = config_hash(resolved)
    row: dict[str, Any] = {
        "run_id": run_id,
        "config_hash": hash_,
        "sweep_id": str(cfg.get("sweep_id") or ""),
        "status": "failed",
        "error": "",
        "started_at": utc_timestamp(),
        "run_dir": str(run_dir),
        **provenance(),
        "model": str(cfg.model.name),
        "task": str(cfg.task.name),
        "lang": str(cfg.task.get("lang") or ""),
        "method": str(cfg.method.get("name", "")),
        "seed": cfg.seed if isinstance(cfg.seed, int) else None,
        "debug": debug_label(cfg),
    }
    file_handler = logging.FileHandler(run_dir / "run.log")
    file_handler.setFormatter(logging.Formatter("[%(asctime)s][%(name)s][%(levelname)s] - %(message)s"))
    logging.getLogger().addHandler(file_handler)
    ctx = RunContext(cfg=cfg, run_id=run_id, run_dir=run_dir, config_hash=hash_)
    error: Exception | None = None
    ctx.guard = PreemptionGuard().__enter__()
    try:
        log.info("Run %s in %s", run_id, run_dir)
        # First, so that an online W&B run without credentials fails before any work.
        ctx.tracker = Tracker(cfg.logger, run_dir)
        build_components(ctx, conf_dir)
        row["main_metric"] = ctx.task.main_metric
        # The data read keys the run: edited files under the same data_dir are a new config.
        ctx.data_fingerprint, run_data = data_fingerprints(cfg, ctx.task, Path(cfg.paths.cache_dir))
        ctx.config_hash = hash_ = config_hash(resolved, data_fingerprint=run_data)
        row.update(config_hash=hash_, data_fingerprint=run_data)
        log.info("Config %s, data %s", hash_, ctx.data_fingerprint)
        device = evaluation_device(str(cfg.evaluation.device), ctx.methods[-1])
        extras = cfg.evaluation.get("extra_metrics")
        extras = OmegaConf.to_container(extras, resolve=True) if OmegaConf.is_config(extras) else extras
        extra_metrics = load_extra_metrics(extras, ctx.task)
        ctx.tracker.start(resolved, row, group=row["sweep_id"])
        stages = [(m.name, m.row_params()) for m in ctx.methods]
        row["method"] = method_label(stages)
        row.update(flatten_method_params(stages))
        ctx.task.load()  # logs each split's size and source once
        prepare_pretrained(ctx)
        ctx.tokenizer = ctx.spec.build_tokenizer(ctx.task, Path(cfg.paths.cache_dir))
        ctx.task.setup(ctx.tokenizer)
        prepare_teacher(ctx, row)
        compress_start = time.perf_counter()
        model, mctx = apply_methods(ctx)
        row.update(training_cost(time.perf_counter() - compress_start, ctx.step_times_s, ctx.teacher_time_s))
        export_dir = write_export(ctx, model, mctx)
        if cfg.evaluation.evaluate_reloaded_export:
            model = load_export(export_dir)
        baseline = ctx.teacher.to(device)  # the fp32 model the latency ratio is measured against
        row.update(evaluate_all(ctx.task, model.to(device), baseline, ctx.family, run_dir, cfg.evaluation,
                                ood_task_configs(cfg),
                                size_bytes=artifact_size_bytes(export_dir),
                                reference_bytes=fp32_reference_bytes(ctx.teacher_dir),
                                eff_mode=ctx.methods[-1].eff_mode))
        if extra_metrics:
            row.update(extra_quality(extra_metrics, *ctx.task.saved_predictions(run_dir)))
        row["status"] = "ok"
    except Exception as exc:  # every failure becomes a row
        ctx.guard.disarm()
        error = exc
        row["error"] = error_summary(exc)
        log.error("Run %s failed: %s", run_id, row["error"])
        (run_dir / "traceback.txt").write_text(traceback.format_exc())
    finally:
        ctx.guard.disarm()  # a SIGTERM from here on waits until the row is stored
        row["duration_s"] = time.time() - started
        record = {"row": row, "config": resolved}
        (run_dir / "record.json").write_text(json.dumps(record, indent=2, default=str))
        store_row(Path(cfg.paths.db), row)
        if row["status"] == "ok":  # stored: the next attempt skips this config, so drop its checkpoints
            clear_checkpoints(checkpoint_root(cfg) / hash_)
        if ctx.tracker is not None:
            try:
                ctx.tracker.finish(row)
            except Exception as exc:  # tracking must not turn a stored result into a crash
                log.error("W&B could not finish run %s: %s", run_id, error_summary(exc))
        logging.getLogger().removeHandler(file_handler)
        file_handler.close()
        ctx.guard.__exit__(None, None, None)
    return row, error
