"""Compression methods: one file per method, one YAML per method under ``conf/method/``.

``build_methods`` turns the composed ``method`` config into a list of stages (a chain of one
or more methods), refusing unknown parameters with one sentence.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from hydra.utils import get_class
from omegaconf import DictConfig, OmegaConf

from compbench.errors import ConfigError
from compbench.methods.base import Method, MethodContext, TrainingOutputs

__all__ = ["Method", "MethodContext", "TrainingOutputs", "build_method", "build_methods"]


def build_method(cfg: DictConfig | dict[str, Any]) -> Method:
    """Instantiate one method from its config, refusing unknown keys before any work.

    Args:
        cfg: a config with ``_target_`` (the Method subclass), ``name`` and parameters.
    """
    data = OmegaConf.to_container(cfg, resolve=True) if isinstance(cfg, DictConfig) else dict(cfg)
    target = data.pop("_target_", None)
    if target is None:
        raise ConfigError("the method config has no _target_; pick one with method=<name>.")
    cls = get_class(target)
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - known)
    if unknown:
        params = ", ".join(sorted(known - {"name"})) or "none"
        raise ConfigError(
            f"method '{data.get('name', target)}' has no parameter(s) {', '.join(unknown)}; "
            f"its parameters are: {params}."
        )
    try:
        return cls(**data)
    except (TypeError, ValueError) as exc:
        if isinstance(exc, ConfigError):
            raise
        raise ConfigError(f"method '{data.get('name', target)}': {exc}") from exc


def build_methods(cfg: DictConfig) -> list[Method]:
    """Build the chain of methods from the composed ``method`` node.

    A chain is written as ``method.stages`` (a mapping name -> method config, in order), e.g.
    by ``conf/method/chain.yaml`` or an experiment file; a single method is the node itself.
    """
    if "stages" in cfg and cfg.get("_target_") is None:
        stages = cfg.stages
        if not stages:
            raise ConfigError("method=chain needs at least one stage in method.stages.")
        return [build_method(stage) for stage in stages.values()]
    return [build_method(cfg)]
