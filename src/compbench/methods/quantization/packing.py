"""Packed low-bit exports: integer codes at 2/3/4/8 bits plus fp16 steps, in safetensors.

Bit layout (``pack_codes``): codes are unsigned (``0 .. 2**bits - 1``) and written as one
little-endian bit stream: code ``i`` occupies bits ``[i*bits, (i+1)*bits)`` counted from the
least significant bit of byte 0. For 2, 4 and 8 bits that is 4, 2 and 1 codes per byte (code
``i`` of a byte at bit ``bits * i``); 3-bit codes are packed densely, 8 codes per 3 bytes.
The stream is zero-padded to a whole byte. safetensors has no sub-byte dtypes, hence this.

An export directory (``save_packed_export``) holds:

* ``config.json``: the HF config, so the loader rebuilds the same transformers class;
* ``model.safetensors``: for each quantized weight (stored once even when tied, e.g. GPT-2's
  ``wte``/``lm_head`` or BART's ``shared``/``embed_tokens``/``lm_head``) ``<name>.qcodes``
  (packed uint8), ``<name>.qscale`` (fp16 per channel/group) and ``<name>.qzero`` (uint8, one
  value when every group shares it, as with symmetric codes); every other float tensor
  (LayerNorm, biases, positional/token-type tables, heads left unquantized) in **fp16**; the
  learned activation-quantizer parameters in fp32; integer buffers as they are;
* ``quant_layout.json``: bits, shapes and aliases of each quantized weight and the modules that
  quantize their inputs (counted in the artifact size: it is part of the model).

Because unquantized tensors are stored in fp16, methods call :func:`round_unquantized_to_fp16`
in ``finalize``: the finalized model and its reload are then the same function, bit for bit.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from torch import Tensor, nn

from compbench.errors import ConfigError
from compbench.methods.export import build_from_config, tied_groups, write_manifest
from compbench.methods.quantization.quantized_modules import QuantLinear
from compbench.methods.quantization.quantizers import QuantizedWeight, get_quantizer
from compbench.models.architecture import conv1d_to_linear

WEIGHTS_FILE = "model.safetensors"
LAYOUT_FILE = "quant_layout.json"
PACKED_BITS = (2, 3, 4, 8)


# ---------------------------------------------------------------------------- bit packing
def pack_codes(codes: Tensor, bits: int) -> Tensor:
    """Pack unsigned integer codes (any shape, values < 2**bits) into a flat uint8 tensor."""
    if bits not in PACKED_BITS:
        raise ConfigError(f"cannot pack {bits}-bit codes; supported bit-widths are {PACKED_BITS}.")
    flat = codes.reshape(-1).to(torch.uint8)
    if flat.numel() and int(flat.max()) >= 2**bits:
        raise ValueError(f"a code exceeds {bits} bits (max {int(flat.max())})")
    if bits == 8:
        return flat.clone()
    if 8 % bits == 0:
        per_byte = 8 // bits
        pad = (-flat.numel()) % per_byte
        lanes = torch.cat([flat, flat.new_zeros(pad)]).reshape(-1, per_byte)
        packed = torch.zeros(lanes.shape[0], dtype=torch.uint8)
        for lane in range(per_byte):
            packed |= lanes[:, lane] << (bits * lane)
        return packed
    # Odd widths (3): a dense LSB-first bit stream via numpy's packbits.
    as_bits = (flat.numpy()[:, None] >> np.arange(bits, dtype=np.uint8)) & 1
    return torch.from_numpy(np.packbits(as_bits.reshape(-1), bitorder="little"))


def unpack_codes(packed: Tensor, bits: int, numel: int) -> Tensor:
    """Inverse of :func:`pack_codes`: the first ``numel`` codes as a flat uint8 tensor."""
    if bits not in PACKED_BITS:
        raise ConfigError(f"cannot unpack {bits}-bit codes; supported bit-widths are {PACKED_BITS}.")
    packed = packed.reshape(-1).to(torch.uint8)
    if bits == 8:
        return packed[:numel].clone()
    mask = (1 << bits) - 1
    if 8 % bits == 0:
        lanes = [(packed >> (bits * lane)) & mask for lane in range(8 // bits)]
        return torch.stack(lanes, dim=1).reshape(-1)[:numel].contiguous()
    stream = np.unpackbits(packed.numpy(), bitorder="little")[: numel * bits].reshape(numel, bits)
    weights = (1 << np.arange(bits, dtype=np.uint8)).astype(np.uint8)
    return torch.from_numpy((stream * weights).sum(axis=1).astype(np.uint8))


def pack_weight(qw: QuantizedWeight) -> tuple[dict[str, Tensor], dict[str, Any]]:
    """Tensors (``qcodes``, ``qscale``, ``qzero``) and layout entry of one quantized weight."""
    zero = qw.zero
    if bool((zero == zero.reshape(-1)[0]).all()):
        zero = zero.reshape(-1)[:1]
    tensors = {
        "qcodes": pack_codes(qw.codes, qw.bits),
        "qscale": qw.scale.to(torch.float16).contiguous(),
        "qzero": zero.to(torch.uint8).contiguous(),
    }
    layout = {"bits": qw.bits, "shape": list(qw.shape), "grouped_shape": list(qw.codes.shape)}
    return tensors, layout


def unpack_weight(tensors: dict[str, Tensor], layout: dict[str, Any]) -> QuantizedWeight:
    """Rebuild the :class:`QuantizedWeight` written by :func:`pack_weight`."""
    grouped = tuple(layout["grouped_shape"])
    numel = int(np.prod(grouped))
    codes = unpack_codes(tensors["qcodes"], layout["bits"], numel).reshape(grouped)
    scale = tensors["qscale"]
    zero = tensors["qzero"]
    if zero.numel() == 1:
        zero = zero.reshape(1, 1, 1).expand(scale.shape)
    return QuantizedWeight(codes=codes, scale=scale, zero=zero.reshape(scale.shape), bits=layout["bits"],
                           shape=tuple(layout["shape"]))


# ---------------------------------------------------------------------------- model-level
def _param_names(model: nn.Module) -> dict[int, list[str]]:
    """Every name under which each tensor (by identity) appears in the state dict, the stored one first."""
    state = model.state_dict(keep_vars=True)
    return {id(state[kept]): [kept, *aliases] for kept, aliases in tied_groups(state).items()}


def _is_quantizer_state(name: str) -> bool:
    return "act_quantizer." in name or "weight_quantizer." in name


@torch.no_grad()
def round_unquantized_to_fp16(model: nn.Module) -> nn.Module:
    """Round every float tensor that is not a quantized weight or quantizer state to fp16 values.

    Kept in fp32 storage so the model runs as before; the export then stores them losslessly in
    fp16 (halving their size) and the reload equals the finalized model exactly.
    """
    quantized = {id(m.weight) for m in model.modules() if hasattr(m, "quantized_weight")}
    for name, tensor in model.state_dict(keep_vars=True).items():
        if id(tensor) in quantized or _is_quantizer_state(name) or not tensor.is_floating_point():
            continue
        tensor.data.copy_(tensor.data.to(torch.float16).to(tensor.dtype))
    return model


def save_packed_export(
    model: nn.Module,
    out_dir: Path,
    method: str,
    *,
    conv1d_converted: bool = True,
    **extra: Any,
) -> dict[str, Any]:
    """Write a frozen quantized model (see :func:`compbench.methods.quantization.quantized_modules.freeze_quantized`).

    Args:
        model: the finalized HF model; modules carrying ``quantized_weight`` are packed.
        out_dir: directory to write.
        method: the method name (recorded in the manifest).
        conv1d_converted: the model's GPT-2 ``Conv1D`` layers were converted to ``nn.Linear``.
        **extra: more manifest fields.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    model.config.save_pretrained(out_dir)
    names = _param_names(model)
    tensors: dict[str, Tensor] = {}
    layout: dict[str, Any] = {"quantized": {}, "act_quantized": {}, "aliases": {}}
    done: set[int] = set()
    for module in model.modules():
        qw = getattr(module, "quantized_weight", None)
        if qw is None or id(module.weight) in done:
            continue
        done.add(id(module.weight))
        primary, *aliases = names[id(module.weight)]
        packed, entry = pack_weight(qw)
        tensors.update({f"{primary}.{key}": value for key, value in packed.items()})
        layout["quantized"][primary] = entry
        layout["aliases"][primary] = aliases
    for name, module in model.named_modules():
        if isinstance(module, QuantLinear) and module.act_quantizer is not None:
            q = module.act_quantizer
            layout["act_quantized"][name] = {"quantizer": q.registry_name, "bits": q.bits}
    state = model.state_dict(keep_vars=True)
    for tensor_id, tensor_names in names.items():
        if tensor_id in done:
            continue
        primary, *aliases = tensor_names
        tensor = state[primary].detach()
        if tensor.is_floating_point() and not _is_quantizer_state(primary):
            tensor = tensor.to(torch.float16)
        tensors[primary] = tensor.contiguous()
        if aliases:
            layout["aliases"][primary] = aliases
    save_file(tensors, str(out_dir / WEIGHTS_FILE))
    (out_dir / LAYOUT_FILE).write_text(json.dumps(layout, separators=(",", ":")))
    return write_manifest(
        out_dir,
        {
            "format": "packed",
            "loader": "compbench.methods.quantization.packing:load_packed_export",
            "method": method,
            "model_class": type(model).__name__,
            "conv1d_converted": conv1d_converted,
            **extra,
        },
    )


def build_for_loading(out_dir: Path, manifest: dict[str, Any]) -> nn.Module:
    """The export's architecture from ``config.json`` (random weights), with GPT-2's ``Conv1D``
    layers converted to ``nn.Linear`` when the exported model had them converted."""
    model = build_from_config(out_dir, manifest)
    if manifest.get("conv1d_converted", True):
        conv1d_to_linear(model)
    return model


@torch.no_grad()
def load_packed_export(out_dir: Path, manifest: dict[str, Any]) -> nn.Module:
    """Loader named by :func:`save_packed_export` manifests: same HF class, same logits."""
    out_dir = Path(out_dir)
    model = build_for_loading(out_dir, manifest)
    layout = json.loads((out_dir / LAYOUT_FILE).read_text())
    stored = load_file(str(out_dir / WEIGHTS_FILE))
    for name, spec in layout["act_quantized"].items():
        linear = model.get_submodule(name)
        act = get_quantizer(spec["quantizer"])(spec["bits"], per_channel=False)
        parent_name, _, child_name = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        setattr(parent, child_name, QuantLinear(linear, None, act))
    state: dict[str, Tensor] = {}
    for name, entry in layout["quantized"].items():
        qw = unpack_weight({k: stored[f"{name}.{k}"] for k in ("qcodes", "qscale", "qzero")}, entry)
        state[name] = qw.dequantize()
        for alias in layout["aliases"].get(name, []):
            state[alias] = state[name]
    for name, tensor in stored.items():
        if name.rsplit(".", 1)[-1] in ("qcodes", "qscale", "qzero") and name.rsplit(".", 1)[0] in layout["quantized"]:
            continue
        for key in [name, *layout["aliases"].get(name, [])]:
            state[key] = tensor
    target = model.state_dict()
    state = {k: (v.to(target[k].dtype) if k in target and v.is_floating_point() else v) for k, v in state.items()}
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise ConfigError(
            f"export in {out_dir} does not match its config: missing {missing[:3]}, unexpected {unexpected[:3]}; "
            "re-export it with the same compbench version."
        )
    return model
