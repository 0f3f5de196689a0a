"""Build once, then run: :func:`build_plan` turns a composed config into the objects one run
needs — model spec, task, out-of-distribution tasks, method chain, devices, extra metrics — and
validates them, cheaply, before any training. The pipeline's stages receive the plan; none of
them rebuilds a config.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

from compbench.configs import build_dataclass, check_run_settings, ood_task_configs
from compbench.errors import ConfigError
from compbench.methods import Method, MethodContext, build_methods
from compbench.metrics.extra import load_extra_metrics
from compbench.models.loader import ModelSpec
from compbench.records.schema import config_hash
from compbench.tasks.base import Task
from compbench.training.pretrain import PretrainSpec, objective_of

log = logging.getLogger(__name__)


@dataclass
class RunPlan:
    """What one run is, built and validated from its config (:func:`build_plan`).

    Attributes:
        cfg: the composed run config (read-only from here on).
        spec: the model spec; ``name_or_path`` is pointed at the pretrained checkpoint by the
            pretraining stage when the model config has a ``pretrain:`` block.
        family: ``encoder`` | ``decoder`` | ``encoder_decoder``.
        task: the task (not loaded yet).
        ood_tasks: ``evaluation.ood`` name -> its task (not loaded yet).
        methods: the method chain, in order.
        device: where the method chain trains (:func:`method_device`).
        eval_device: where the finalized model is evaluated (:func:`evaluation_device`).
        pretrain: the pretraining settings, or None.
        extra_metrics: HF ``evaluate`` metrics for ``quality.ext.*`` columns.
    """

    cfg: DictConfig
    spec: ModelSpec
    family: str
    task: Task
    ood_tasks: dict[str, Task]
    methods: list[Method]
    device: torch.device
    eval_device: torch.device
    pretrain: PretrainSpec | None = None
    extra_metrics: list[Any] = field(default_factory=list)

    @property
    def seed(self) -> int:
        return int(self.cfg.seed)

    @property
    def has_teacher(self) -> bool:
        """Whether the run fine-tunes a teacher (``finetune.enabled``)."""
        return bool(self.cfg.finetune.enabled)

    def method_context(self, teacher: torch.nn.Module | None = None, tokenizer: Any = None,
                       pretrained_loader: Any = None) -> MethodContext:
        """The :class:`MethodContext` of this run's stages (before fine-tuning: no teacher yet)."""
        cfg = self.cfg
        budget = ({"finetune_steps": int(cfg.finetune.max_steps), "finetune_lr": float(cfg.finetune.lr)}
                  if cfg.finetune.enabled else {"finetune_steps": None, "finetune_lr": None})
        return MethodContext(family=self.family, task=self.task, teacher=teacher, tokenizer=tokenizer,
                             device=self.device, seed=self.seed, pretrained_loader=pretrained_loader,
                             teacher_available=self.has_teacher, **budget)


# --------------------------------------------------------------------------- devices
def method_device(cfg: DictConfig) -> torch.device:
    """The device the method chain runs on: CUDA when present and ``trainer.accelerator`` allows
    it (Lightning trains there too), else the CPU. Methods see it as ``MethodContext.device``."""
    accelerator = str(cfg.trainer.get("accelerator", "auto")).lower()
    return torch.device("cuda" if torch.cuda.is_available() and accelerator in ("auto", "gpu", "cuda") else "cpu")


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


# --------------------------------------------------------------------------- compatibility
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


# --------------------------------------------------------------------------- tasks and data
def build_ood_tasks(cfg: DictConfig) -> dict[str, Task]:
    """Each ``evaluation.ood`` test set as a task (resolved by ``configs.ood_task_configs``)."""
    out = {}
    for name, task_cfg in ood_task_configs(cfg).items():
        try:
            out[name] = build_dataclass(task_cfg, f"evaluation.ood.{name} task")
        except ConfigError as exc:
            raise ConfigError(f"out-of-distribution set evaluation.ood.{name}: {exc}") from exc
    return out


def data_fingerprints(task: Task, ood_tasks: dict[str, Task], cache_dir: Path) -> tuple[str, str]:
    """(teacher's, run's) data fingerprint: the task's data, and that plus every out-of-distribution
    test set's (whose data is checked here, before any training, too)."""
    main = task.fingerprint(cache_dir)
    ood = {}
    for name, other in ood_tasks.items():
        try:
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
    _, fingerprint = data_fingerprints(task, build_ood_tasks(cfg), Path(cache_dir or cfg.paths.cache_dir))
    return config_hash(OmegaConf.to_container(cfg, resolve=True), data_fingerprint=fingerprint), fingerprint


# --------------------------------------------------------------------------- the plan
def build_plan(cfg: DictConfig, conf_dir: Path | None = None) -> RunPlan:
    """Build and validate everything a run needs; nothing expensive happens here.

    Refuses with one :class:`ConfigError` sentence: bad run settings, an incompatible model ×
    task, a missing corpus or data folder, a ``task.max_length`` beyond the model's context, a
    method parameter its ``check`` refuses (on a weightless skeleton of the teacher too, for
    methods that need one), an unknown evaluation device or extra metric.
    """
    check_run_settings(cfg)
    spec = build_dataclass(cfg.model, "model")
    task = build_dataclass(cfg.task, "task")
    methods = build_methods(cfg.method)
    family = spec.resolve_family()
    check_compatible(spec, family, task, conf_dir)
    pretrain = None
    if spec.pretrain is not None:
        pretrain = build_dataclass({"_target_": f"{PretrainSpec.__module__}.PretrainSpec", **spec.pretrain},
                                   "model.pretrain")
        pretrain.check_corpus()
        objective_of(family)
    task.check_data()
    context = spec.context_length()
    if context is not None and task.max_length > context:
        raise ConfigError(f"task.max_length={task.max_length} exceeds the {context}-token context of model "
                          f"'{spec.name}'; set task.max_length={context} or less.")
    plan = RunPlan(cfg=cfg, spec=spec, family=family, task=task, ood_tasks={}, methods=methods,
                   device=method_device(cfg), eval_device=torch.device("cpu"), pretrain=pretrain)
    for method in methods:
        method.check(plan.method_context())
    if plan.has_teacher and any(m.requires_teacher for m in methods):
        _check_on_skeleton(plan)
    plan.ood_tasks = build_ood_tasks(cfg)
    plan.eval_device = evaluation_device(str(cfg.evaluation.device), methods[-1])
    extras = cfg.evaluation.get("extra_metrics")
    extras = OmegaConf.to_container(extras, resolve=True) if OmegaConf.is_config(extras) else extras
    plan.extra_metrics = load_extra_metrics(extras, task)
    return plan


def _check_on_skeleton(plan: RunPlan) -> None:
    """Checks against the teacher's architecture (a KD student deeper than its teacher) run now on
    a weightless skeleton, not after fine-tuning; they run again on the real teacher."""
    try:
        skeleton = plan.spec.skeleton(plan.task)
    except Exception as exc:  # noqa: BLE001 - no skeleton (exotic architecture): the later check still runs
        log.debug("No meta-device skeleton of %s: %s", plan.spec.name, exc)
        return
    context = plan.method_context(teacher=skeleton)
    for method in plan.methods:
        if not method.requires_teacher:
            continue
        try:
            method.check(context)
        except ConfigError:
            raise
        except Exception as exc:  # noqa: BLE001 - a check that needs real weights runs later
            log.debug("Check of %s on the skeleton skipped: %s", method.name, exc)
