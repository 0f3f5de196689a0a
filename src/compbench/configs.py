"""Strict construction of config-driven components (methods, tasks).

Hydra's ``instantiate`` reports an unknown key as a Python ``TypeError`` deep in a traceback;
researchers sweeping overnight need one sentence naming the bad key and the valid ones.
"""

from __future__ import annotations

import dataclasses
import math
import os
import types
import typing
from pathlib import Path
from typing import Any

from hydra.utils import get_class
from omegaconf import DictConfig, OmegaConf

from compbench.errors import ConfigError


def conf_dir() -> Path:
    """The config tree: ``$COMPBENCH_CONF_DIR``, else ``conf/`` beside ``src/`` of this checkout.

    Looked up when asked (by the CLIs' ``main``, benchmarks, tests), never at import.

    Raises:
        ConfigError: the folder has no ``config.yaml``.
    """
    env = os.environ.get("COMPBENCH_CONF_DIR")
    path = Path(env) if env else Path(__file__).resolve().parents[2] / "conf"
    if not (path / "config.yaml").is_file():
        raise ConfigError(f"no conf/config.yaml at {path}; install with `pip install -e .` from the repository "
                          "or set COMPBENCH_CONF_DIR to its conf/ folder.")
    return path


def to_dict(cfg: DictConfig | dict[str, Any]) -> dict[str, Any]:
    """A plain, resolved dict copy of a config node."""
    if isinstance(cfg, DictConfig):
        return OmegaConf.to_container(cfg, resolve=True)  # type: ignore[return-value]
    return dict(cfg)


def build_dataclass(cfg: DictConfig | dict[str, Any], what: str) -> Any:
    """Instantiate the dataclass named by ``cfg._target_``, refusing unknown keys.

    Args:
        cfg: config with ``_target_`` and the dataclass's fields.
        what: what is being built ("method", "task"), for the error sentence.
    """
    data = to_dict(cfg)
    target = data.pop("_target_", None)
    label = data.get("name", target)
    if target is None:
        raise ConfigError(f"the {what} config has no _target_; pick one with {what}=<name>.")
    cls = get_class(target)
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - known)
    if unknown:
        params = ", ".join(sorted(known - {"name"})) or "none"
        raise ConfigError(
            f"{what} '{label}' has no parameter(s) {', '.join(unknown)}; its parameters are: {params}."
        )
    wrong = _wrongly_typed(cls, data)
    if wrong:
        name, value, expected = wrong
        raise ConfigError(f"{what} '{label}': {name}={value!r} is not {expected}; give a value of that type.")
    try:
        return cls(**data)
    except ConfigError:
        raise
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{what} '{label}': {exc}") from exc


def ood_task_configs(cfg: DictConfig) -> dict[str, dict[str, Any]]:
    """The task config of each ``evaluation.ood`` test set, resolved.

    Each set's overrides are merged into the run's task config *before* interpolations are
    resolved, so that keys derived from others follow them: with ``{lang: yor}``,
    ``default_data_dir: ${paths.data_root}/masakhaner/${task.lang}`` and ``hub_config:
    ${task.lang}`` become Yoruba's (merging after resolution would silently keep the training
    language's data). An explicit ``task.data_dir`` does not follow ``lang``: a set that changes
    ``lang`` but would read the run's own ``data_dir`` is refused, naming the fix.

    Args:
        cfg: the run's whole config (the root, so that ``${paths...}`` interpolations resolve).

    Returns:
        set name -> its resolved task config (plain dict), in ``evaluation.ood`` order.
    """
    ood = cfg.evaluation.get("ood") if "evaluation" in cfg else None
    if not ood:
        return {}
    run_task = to_dict(cfg.task)
    out: dict[str, dict[str, Any]] = {}
    for name in ood:
        overrides = OmegaConf.to_container(ood[name], resolve=False) if ood[name] is not None else {}
        if not isinstance(overrides, dict):
            raise ConfigError(f"evaluation.ood.{name} must be a mapping of task overrides like {{lang: yor}}, "
                              f"got {overrides!r}.")
        merged = OmegaConf.create(OmegaConf.to_container(cfg, resolve=False))  # detached, unstructured copy
        merged.task = OmegaConf.merge(merged.task, overrides)
        try:
            task = OmegaConf.to_container(merged.task, resolve=True)
        except Exception as exc:  # an interpolation the override broke, as one sentence
            raise ConfigError(f"evaluation.ood.{name}: cannot resolve its task config ({exc}).") from exc
        same_dir = task.get("data_dir") is not None and task.get("data_dir") == run_task.get("data_dir")
        if "data_dir" not in overrides and same_dir and task.get("lang") != run_task.get("lang"):
            raise ConfigError(
                f"evaluation.ood.{name} sets lang={task.get('lang')} but would read the run's own "
                f"task.data_dir={run_task['data_dir']} ({run_task.get('lang')} data); set "
                f"evaluation.ood.{name}.data_dir=<folder with its files>."
            )
        out[str(name)] = task
    return out


_TYPE_WORDS = {int: "an integer", float: "a number", bool: "true or false", str: "a string",
               list: "a list", dict: "a mapping", tuple: "a list"}


def _accepts(value: Any, hint: Any) -> bool | None:
    """Whether ``value`` fits the annotation ``hint``; None when the hint is not one we check."""
    if hint is Any or isinstance(hint, typing.TypeVar):
        return True
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        answers = [_accepts(value, h) for h in typing.get_args(hint)]
        return None if all(a is None for a in answers) else any(a for a in answers)
    if origin is typing.Literal:
        return value in typing.get_args(hint)
    base = origin or hint
    if hint is type(None):
        return value is None
    if base is bool:
        return isinstance(value, bool)
    if base is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if base is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if base in (str, list, dict, tuple):
        return isinstance(value, (list, tuple)) if base in (list, tuple) else isinstance(value, base)
    return None


def _expected(hint: Any) -> str:
    args = [a for a in typing.get_args(hint) if a is not type(None)] or [typing.get_origin(hint) or hint]
    words = [_TYPE_WORDS.get(typing.get_origin(a) or a, getattr(a, "__name__", str(a))) for a in args]
    return " or ".join(dict.fromkeys(words)) + (" (or null)" if type(None) in typing.get_args(hint) else "")


def _wrongly_typed(cls: type, data: dict[str, Any]) -> tuple[str, Any, str] | None:
    """The first (field, value, expected type) whose value does not fit the dataclass annotation.

    Hydra passes ``method.sparsity=abc`` as the string "abc"; left alone it fails later as
    "'<' not supported between 'str' and 'int'". Only plain annotations are checked.
    """
    try:
        hints = typing.get_type_hints(cls)
    except Exception:  # noqa: BLE001 - unresolvable annotations: nothing to check against
        return None
    for name, value in data.items():
        hint = hints.get(name)
        if hint is None or typing.get_origin(hint) is typing.ClassVar:
            continue
        if _accepts(value, hint) is False:
            return name, value, _expected(hint)
    return None


def _setting(cfg: Any, dotted: str) -> Any:
    node = cfg
    for key in dotted.split("."):
        if node is None:
            return None
        node = node.get(key) if hasattr(node, "get") else None
    return node


#: Run-level settings of conf/config.yaml: (dotted key, kind, lowest, highest, null allowed).
#: Bounds are inclusive unless the kind ends in ">" (lowest excluded).
RUN_SETTINGS: tuple[tuple[str, str, float | None, float | None, bool], ...] = (
    ("seed", "int", 0, None, False),
    ("threads", "int", 1, None, True),
    ("finetune.max_steps", "int", 1, None, False),
    ("finetune.lr", "float>", 0, None, False),
    ("finetune.weight_decay", "float", 0, None, False),
    ("finetune.warmup_ratio", "float", 0, 1, False),
    ("finetune.val_every_n_steps", "int", 1, None, False),
    ("resume.every_n_steps", "int", 1, None, False),
    ("evaluation.calibration.n_bins", "int", 2, None, False),
    ("evaluation.calibration.max_dev_tokens", "int", 1, None, False),
    ("evaluation.robustness.max_examples", "int", 1, None, True),
    ("evaluation.efficiency.batch_size", "int", 1, None, False),
    ("evaluation.efficiency.seq_len", "int", 1, None, False),
    ("evaluation.efficiency.warmup", "int", 0, None, False),
    ("evaluation.efficiency.repeats", "int", 1, None, False),
    ("evaluation.efficiency.threads", "int", 1, None, True),
)


def check_run_settings(cfg: Any) -> None:
    """Refuse a wrongly typed or out-of-range run-level setting in one sentence (before any work)."""
    for key, kind, low, high, nullable in RUN_SETTINGS:
        if key.startswith("finetune.") and not _setting(cfg, "finetune.enabled"):
            continue  # fine-tuning is off: its settings are not read
        value = _setting(cfg, key)
        parent = key.rpartition(".")[0]
        if value is None:
            if nullable or (parent and _setting(cfg, parent) is None):
                continue  # allowed, or a whole section absent (configs built in tests)
            raise ConfigError(f"{key} needs a value; set {key}=<value>.")
        is_int = isinstance(value, int) and not isinstance(value, bool)
        is_number = is_int or (isinstance(value, float) and math.isfinite(value))
        if kind == "int" and not is_int:
            raise ConfigError(f"{key}={value!r} is not an integer; give a whole number, e.g. {key}={int(low or 1)}.")
        if kind.startswith("float") and not is_number:
            raise ConfigError(f"{key}={value!r} is not a finite number; give one, e.g. {key}=0.001.")
        exclusive = kind.endswith(">")
        if low is not None and (value < low or (exclusive and value == low)):
            bound = f"> {low}" if exclusive else f">= {low}"
            raise ConfigError(f"{key}={value!r} is out of range; it must be {bound}.")
        if high is not None and value >= high and kind.startswith("float"):
            raise ConfigError(f"{key}={value!r} is out of range; it must be < {high}.")
