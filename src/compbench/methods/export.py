"""Exported artifacts: every method writes a directory with a ``compbench_export.json`` manifest.

The manifest names a loader (``module:function`` inside the ``compbench`` package only, so a
manifest can never make us import arbitrary code) that rebuilds the compressed model from the
files in the directory. ``artifact_size_bytes`` measures what is on disk: the numbers in the
row's ``eff.size_mb`` come from here, never from parameter counts.

What every export format shares lives here, once: the manifest, the model-class check
(``model_class``), rebuilding the architecture from ``config.json`` (``build_from_config``),
tied-tensor de-duplication (``tied_groups``) and the method's parameters as JSON values
(``manifest["params"]``, written from ``Method.manifest_params``; loaders read them from there,
never from the results row's display strings).
"""

from __future__ import annotations

import importlib
import json
from pathlib import Path
from typing import Any, Callable, Mapping

import transformers
from torch import Tensor, nn

from compbench.errors import ConfigError

MANIFEST = "compbench_export.json"
#: Files in an export directory that are not the model's weights/config (not counted in size).
_NOT_MODEL_FILES = {MANIFEST}
_TOKENIZER_DIR = "tokenizer"


def write_manifest(out_dir: Path, manifest: dict[str, Any]) -> dict[str, Any]:
    """Write the manifest, adding the on-disk size of the model files."""
    manifest = dict(manifest)
    manifest["size_bytes"] = artifact_size_bytes(out_dir)
    (Path(out_dir) / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=True))
    return manifest


def artifact_size_bytes(out_dir: Path) -> int:
    """Bytes on disk of the model files in an export directory (tokenizer and manifest excluded)."""
    out_dir = Path(out_dir)
    total = 0
    for path in out_dir.rglob("*"):
        if not path.is_file() or path.name in _NOT_MODEL_FILES:
            continue
        if _TOKENIZER_DIR in path.relative_to(out_dir).parts:
            continue
        total += path.stat().st_size
    return total


def model_class(out_dir: Path, manifest: dict[str, Any]) -> type:
    """The transformers class named in the manifest, refusing anything else with one sentence."""
    cls = getattr(transformers, str(manifest.get("model_class")), None)
    if not (isinstance(cls, type) and issubclass(cls, transformers.PreTrainedModel)):
        raise ConfigError(f"export in {out_dir} names an unknown model class {manifest.get('model_class')!r}; "
                          "it must be a transformers model class (re-export it).")
    return cls


def build_from_config(out_dir: Path, manifest: dict[str, Any]) -> nn.Module:
    """The manifest's transformers architecture built from ``config.json`` (random weights, no
    remote code); the format's loader then installs the stored tensors."""
    config = transformers.AutoConfig.from_pretrained(str(out_dir))
    return model_class(out_dir, manifest)._from_config(config)


def tied_groups(state: Mapping[str, Any]) -> dict[str, list[str]]:
    """Names of a state dict grouped by the storage they share: ``{kept name: [other names]}``.

    Tied weights (GPT-2's ``wte``/``lm_head``, BART's ``shared``/``embed_tokens``/``lm_head``) are
    stored once, under the first name in state-dict order, and restored under the others at load
    time. Tensors tie when they share storage, shape, stride and dtype; empty tensors and
    non-tensor entries never tie (each is its own group; non-tensors are left out).
    """
    groups: dict[str, list[str]] = {}
    first: dict[tuple, str] = {}
    for name, tensor in state.items():
        if not isinstance(tensor, Tensor):
            continue
        if tensor.numel() == 0:
            groups[name] = []
            continue
        key = (tensor.data_ptr(), tuple(tensor.shape), tuple(tensor.stride()), tensor.dtype)
        if key in first:
            groups[first[key]].append(name)
        else:
            first[key] = name
            groups[name] = []
    return groups


def save_hf_export(model: nn.Module, out_dir: Path, method: str, **extra: Any) -> dict[str, Any]:
    """Save a plain transformers model as safetensors and write its manifest."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out_dir, safe_serialization=True)
    return write_manifest(
        out_dir,
        {
            "format": "hf",
            "loader": "compbench.methods.export:load_hf_export",
            "method": method,
            "model_class": type(model).__name__,
            **extra,
        },
    )


def load_hf_export(out_dir: Path, manifest: dict[str, Any]) -> nn.Module:
    """Reload a ``save_hf_export`` directory with the transformers class that wrote it."""
    return model_class(out_dir, manifest).from_pretrained(out_dir)


#: Loader modules of exports written before methods/ was split into families (manifests on
#: disk keep the old path; they still load).
_MOVED_LOADER_MODULES = {
    "compbench.methods.packing": "compbench.methods.quantization.packing",
    "compbench.methods.ptq_dynamic_int8": "compbench.methods.quantization.ptq_dynamic_int8",
    "compbench.methods.ptq_llm_int8": "compbench.methods.quantization.ptq_llm_int8",
    "compbench.methods.ptq_half": "compbench.methods.quantization.ptq_half",
    "compbench.methods.sparse_storage": "compbench.methods.pruning.sparse_storage",
    "compbench.methods.prune_structured": "compbench.methods.pruning.structured",
}


def resolve_loader(spec: str) -> Callable[[Path, dict[str, Any]], nn.Module]:
    """Import ``module:function`` from inside the compbench package."""
    module_name, _, func = spec.partition(":")
    module_name = _MOVED_LOADER_MODULES.get(module_name, module_name)
    if not module_name.startswith("compbench.") or not func:
        raise ConfigError(f"export loader {spec!r} is not a compbench loader; refusing to import it.")
    return getattr(importlib.import_module(module_name), func)


def load_export(out_dir: str | Path) -> nn.Module:
    """Rebuild the compressed model saved in ``out_dir`` (eval mode, CPU)."""
    out_dir = Path(out_dir)
    manifest_path = out_dir / MANIFEST
    if not manifest_path.exists():
        raise ConfigError(f"{out_dir} is not a compbench export (no {MANIFEST}); pass a run's export/ directory.")
    manifest = json.loads(manifest_path.read_text())
    model = resolve_loader(manifest["loader"])(out_dir, manifest)
    return model.eval()
