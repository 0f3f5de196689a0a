"""Compact on-disk storage of unstructured-sparse weights, and the export/loader built on it.

A sparse tensor is stored as a bitmask (numpy ``packbits``, 8 entries per byte) plus its non-zero
values in row-major order; a tensor is stored that way only when the packed form is smaller than
the dense one, so dense tensors (biases, LayerNorms, unpruned layers) stay dense. Everything lives
in one safetensors file; shapes and dtypes of the sparse entries are in its string metadata.

safetensors has no sparse format and torch's sparse layouts (COO/CSR) spend 8 bytes of index per
non-zero, more than the dense fp32 tensor below ~88% sparsity, hence this small format by hand.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from torch import nn

from compbench.errors import ConfigError
from compbench.methods.export import build_from_config, tied_groups, write_manifest

WEIGHTS_FILE = "model.sparse.safetensors"
_MASK_SUFFIX = "::mask"
_VALUES_SUFFIX = "::values"
_META_KEY = "compbench_sparse"
VALUE_DTYPES = {"float32": torch.float32, "float16": torch.float16}


def sparse_bytes(numel: int, nonzero: int, value_dtype: torch.dtype) -> int:
    """Bytes of the packed form of a tensor: ceil(numel / 8) mask bytes + the non-zero values."""
    return (numel + 7) // 8 + nonzero * torch.empty((), dtype=value_dtype).element_size()


def pack_sparse(tensor: torch.Tensor, value_dtype: torch.dtype = torch.float32) -> tuple[torch.Tensor, torch.Tensor]:
    """Split a tensor into (packed bitmask uint8, non-zero values in row-major order)."""
    flat = tensor.detach().reshape(-1).cpu()
    keep = flat != 0
    mask = torch.from_numpy(np.packbits(keep.numpy()))
    return mask, flat[keep].to(value_dtype).contiguous()


def unpack_sparse(mask: torch.Tensor, values: torch.Tensor, shape: list[int], dtype: torch.dtype) -> torch.Tensor:
    """Rebuild the dense tensor from ``pack_sparse`` output."""
    numel = int(np.prod(shape)) if shape else 1
    keep = torch.from_numpy(np.unpackbits(mask.numpy(), count=numel).astype(bool))
    dense = torch.zeros(numel, dtype=dtype)
    dense[keep] = values.to(dtype)
    return dense.reshape(shape)


def save_sparse_safetensors(
    tensors: dict[str, torch.Tensor], path: str | Path, value_dtype: torch.dtype = torch.float32
) -> dict[str, int]:
    """Write tensors to one safetensors file, packing each floating tensor whose packed form is smaller.

    Args:
        tensors: name -> tensor (no two names may share storage; dedupe tied weights first).
        path: output file.
        value_dtype: dtype of the stored non-zero values (float16 halves them but is lossy).

    Returns:
        ``{"sparse_tensors": n, "dense_tensors": n}``.
    """
    out: dict[str, torch.Tensor] = {}
    sparse_meta: dict[str, dict[str, Any]] = {}
    for name, tensor in tensors.items():
        tensor = tensor.detach().cpu().contiguous()
        if tensor.is_floating_point() and tensor.numel() > 0:
            nonzero = int(torch.count_nonzero(tensor))
            if sparse_bytes(tensor.numel(), nonzero, value_dtype) < tensor.numel() * tensor.element_size():
                out[name + _MASK_SUFFIX], out[name + _VALUES_SUFFIX] = pack_sparse(tensor, value_dtype)
                sparse_meta[name] = {"shape": list(tensor.shape), "dtype": str(tensor.dtype).removeprefix("torch.")}
                continue
        out[name] = tensor
    save_file(out, str(path), metadata={_META_KEY: json.dumps(sparse_meta)})
    return {"sparse_tensors": len(sparse_meta), "dense_tensors": len(tensors) - len(sparse_meta)}


def load_sparse_safetensors(path: str | Path) -> dict[str, torch.Tensor]:
    """Read a ``save_sparse_safetensors`` file back into dense tensors."""
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as handle:
        sparse_meta = json.loads((handle.metadata() or {}).get(_META_KEY, "{}"))
    raw = load_file(str(path))
    tensors = {}
    for name, meta in sparse_meta.items():
        tensors[name] = unpack_sparse(
            raw.pop(name + _MASK_SUFFIX), raw.pop(name + _VALUES_SUFFIX), meta["shape"], getattr(torch, meta["dtype"])
        )
    tensors.update(raw)
    return tensors


def dedupe_state_dict(model: nn.Module) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """The model's state dict with tied tensors stored once.

    Returns:
        (unique tensors, aliases ``{dropped name: kept name}``) so a loader can restore the ties.
    """
    state = model.state_dict()
    groups = tied_groups(state)
    return {name: state[name] for name in groups}, {alias: kept for kept, names in groups.items() for alias in names}


def save_sparse_export(
    model: nn.Module,
    out_dir: str | Path,
    method: str,
    loader: str = "compbench.methods.pruning.sparse_storage:load_sparse_export",
    value_dtype: str = "float32",
    **extra: Any,
) -> dict[str, Any]:
    """Export a transformers model: ``config.json`` + sparse-packed safetensors + manifest.

    Args:
        model: a transformers ``PreTrainedModel`` (masks already made permanent).
        out_dir: export directory.
        method: method name for the manifest.
        loader: ``module:function`` that rebuilds the model (structured pruning passes its own).
        value_dtype: ``float32`` (exact) or ``float16`` (lossy, smaller).
        **extra: more manifest entries (e.g. pruned shapes).
    """
    if value_dtype not in VALUE_DTYPES:
        raise ConfigError(f"sparse value_dtype must be one of {sorted(VALUE_DTYPES)}, got {value_dtype!r}.")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    model.config.to_json_file(str(out_dir / "config.json"))
    tensors, aliases = dedupe_state_dict(model)
    counts = save_sparse_safetensors(tensors, out_dir / WEIGHTS_FILE, VALUE_DTYPES[value_dtype])
    return write_manifest(
        out_dir,
        {
            "format": "sparse-safetensors",
            "loader": loader,
            "method": method,
            "model_class": type(model).__name__,
            "value_dtype": value_dtype,
            "aliases": aliases,
            **counts,
            **extra,
        },
    )


def load_sparse_export(
    out_dir: str | Path, manifest: dict[str, Any], reshape: Callable[[nn.Module], None] | None = None
) -> nn.Module:
    """Rebuild the model from ``config.json`` (architecture from config, no remote code) and load the weights.

    Args:
        out_dir: export directory.
        manifest: its parsed manifest.
        reshape: optional in-place edit of the freshly built model (structured pruning shrinks layers)
            so that its shapes match the stored tensors before they are loaded.
    """
    out_dir = Path(out_dir)
    model = build_from_config(out_dir, manifest)
    if reshape is not None:
        reshape(model)
    tensors = load_sparse_safetensors(out_dir / WEIGHTS_FILE)
    for alias, name in manifest.get("aliases", {}).items():
        tensors[alias] = tensors[name]
    model.load_state_dict(tensors, strict=True)
    return model.eval()
