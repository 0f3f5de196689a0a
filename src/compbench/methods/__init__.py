"""Compression methods: one file per method, one YAML per method under ``conf/method/``.

``build_methods`` turns the composed ``method`` config into a list of stages (a chain of one
or more methods), refusing unknown parameters with one sentence.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from compbench.configs import build_dataclass
from compbench.errors import ConfigError
from compbench.methods.base import Method, MethodContext, TrainingOutputs

__all__ = ["Method", "MethodContext", "TrainingOutputs", "build_method", "build_methods"]


def build_method(cfg: DictConfig | dict[str, Any]) -> Method:
    """Instantiate one method from its config, refusing unknown keys before any work."""
    return build_dataclass(cfg, "method")


def selected_chain() -> list[str] | None:
    """Method names of a ``method=[a,b]`` command-line selection, in order, or None.

    Hydra merges the files of a list selection into one ``method`` node and does not record the
    list in ``hydra.runtime.choices``, so the chain is read back from the job's overrides.
    """
    from hydra.core.hydra_config import HydraConfig
    from hydra.core.override_parser.overrides_parser import OverridesParser

    if not HydraConfig.initialized():
        return None
    parser = OverridesParser.create()
    for override in parser.parse_overrides(list(HydraConfig.get().overrides.task)):
        if override.key_or_group == "method" and override.package is None:
            value = override.value()
            return [str(v) for v in value] if isinstance(value, list) and len(value) > 1 else None
    return None


def split_merged_chain(merged: DictConfig, names: list[str], method_conf_dir: Path) -> list[Method]:
    """Stages of a ``method=[a,b]`` selection: each stage takes its own keys from the merged node.

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
    stages = []
    for name in names:
        stage = OmegaConf.load(method_conf_dir / f"{name}.yaml")
        for key in stage_keys[name]:
            stage[key] = merged[key]
        stages.append(build_method(stage))
    return stages


def build_methods(cfg: DictConfig, method_conf_dir: Path | None = None) -> list[Method]:
    """Build the chain of methods from the composed ``method`` node.

    A chain is either ``method=[a,b]`` on the command line (read back from Hydra's overrides; the
    stages' configs come from ``method_conf_dir``) or ``method.stages`` (a mapping name -> method
    config, in order) as written by experiment files; a single method is the node itself.
    """
    if "stages" in cfg and cfg.get("_target_") is None:
        stages = cfg.stages
        if not stages:
            raise ConfigError("method=chain needs at least one stage in method.stages.")
        return [build_method(stage) for stage in stages.values()]
    names = selected_chain()
    if names and method_conf_dir is not None:
        return split_merged_chain(cfg, names, Path(method_conf_dir))
    return [build_method(cfg)]
