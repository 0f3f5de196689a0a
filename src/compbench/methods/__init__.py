"""Compression methods, in three families: ``quantization/``, ``pruning/``, ``distillation/``.

One file per method, one YAML per method under ``conf/method/`` (``_target_`` names the class).
``base`` holds the lifecycle interface every method implements, ``lifecycle`` runs it
(``compress``), ``export`` writes and reloads the artifacts. ``build_methods`` turns the composed
``method`` config into a list of stages (a chain of one or more methods), refusing unknown
parameters with one sentence.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from compbench.configs import build_dataclass
from compbench.errors import ConfigError
from compbench.methods.base import Method, MethodContext, TrainingOutputs

__all__ = ["Method", "MethodContext", "TrainingOutputs", "build_method", "build_methods", "chain_as_stages", "chain_names"]


def build_method(cfg: DictConfig | dict[str, Any]) -> Method:
    """Instantiate one method from its config, refusing unknown keys before any work."""
    return build_dataclass(cfg, "method")


def chain_names(overrides: Sequence[str]) -> list[str] | None:
    """Method names of a ``method=[a,b]`` selection among command-line overrides, in order, or None.

    Hydra merges the files of a list selection into one ``method`` node and does not record the
    list in ``hydra.runtime.choices``, so the composing entry point (``cli.app``) reads it from the
    job's overrides and turns the node into ``method.stages`` (:func:`chain_as_stages`).
    """
    from hydra.core.override_parser.overrides_parser import OverridesParser

    for override in OverridesParser.create().parse_overrides(list(overrides)):
        if override.key_or_group == "method" and override.package is None:
            value = override.value()
            return [str(v) for v in value] if isinstance(value, list) and len(value) > 1 else None
    return None


def chain_as_stages(merged: DictConfig, names: list[str], method_conf_dir: Path) -> DictConfig:
    """The ``method`` node of a ``method=[a,b]`` selection as ``method.stages``: each stage takes its
    own keys (those of ``conf/method/<name>.yaml``) from the merged node, command-line values included.

    A parameter name present in several stages is ambiguous in the merged node (Hydra keeps the
    last file's value), so it is refused; such chains are written as an experiment file with
    ``method.stages`` (see ``conf/experiment/kd_then_qat.yaml``).
    """
    stage_keys: dict[str, list[str]] = {}
    for name in names:
        path = method_conf_dir / f"{name}.yaml"
        if not path.is_file():
            raise ConfigError(f"method '{name}' has no config {path}; choose from {', '.join(sorted(p.stem for p in method_conf_dir.glob('*.yaml')))}.")
        stage_keys[name] = [k for k in OmegaConf.load(path) if k not in ("_target_", "name")]
    shared = sorted({k for keys in stage_keys.values() for k in keys
                     if sum(k in other for other in stage_keys.values()) > 1})
    if shared:
        raise ConfigError(
            f"method=[{','.join(names)}] is ambiguous: parameter(s) {', '.join(shared)} belong to several stages; "
            "write the chain as an experiment file with method.stages (see conf/experiment/kd_then_qat.yaml)."
        )
    stages = {}
    for name in names:
        stage = OmegaConf.load(method_conf_dir / f"{name}.yaml")
        for key in stage_keys[name]:
            stage[key] = merged[key]
        stages[name] = stage
    return OmegaConf.create({"name": "chain", "stages": stages})


def build_methods(cfg: DictConfig) -> list[Method]:
    """Build the chain of methods from the composed ``method`` node, from nothing but the config:
    ``method.stages`` (a mapping name -> method config, in order; experiment files and
    ``method=[a,b]`` selections, see :func:`chain_as_stages`) or a single method node."""
    if "stages" in cfg and cfg.get("_target_") is None:
        stages = cfg.stages
        if not stages:
            raise ConfigError("method=chain needs at least one stage in method.stages.")
        return [build_method(stage) for stage in stages.values()]
    return [build_method(cfg)]
