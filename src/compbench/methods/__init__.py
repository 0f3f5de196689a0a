"""Compression methods: one file per method, one YAML per method under ``conf/method/``.

``build_methods`` turns the composed ``method`` config into a list of stages (a chain of one
or more methods), refusing unknown parameters with one sentence.
"""

from __future__ import annotations

from typing import Any

from omegaconf import DictConfig

from compbench.configs import build_dataclass
from compbench.errors import ConfigError
from compbench.methods.base import Method, MethodContext, TrainingOutputs

__all__ = ["Method", "MethodContext", "TrainingOutputs", "build_method", "build_methods"]


def build_method(cfg: DictConfig | dict[str, Any]) -> Method:
    """Instantiate one method from its config, refusing unknown keys before any work."""
    return build_dataclass(cfg, "method")


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
