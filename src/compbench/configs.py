"""Strict construction of config-driven components (methods, tasks).

Hydra's ``instantiate`` reports an unknown key as a Python ``TypeError`` deep in a traceback;
researchers sweeping overnight need one sentence naming the bad key and the valid ones.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from hydra.utils import get_class
from omegaconf import DictConfig, OmegaConf

from compbench.errors import ConfigError


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
    try:
        return cls(**data)
    except ConfigError:
        raise
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{what} '{label}': {exc}") from exc
