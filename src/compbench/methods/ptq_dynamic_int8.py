"""``method=ptq_dynamic_int8``: post-training dynamic int8 quantization on real CPU kernels.

Every ``nn.Linear`` (GPT-2's ``Conv1D`` layers are converted first: torch's dynamic quantization
silently skips them) gets int8 per-output-channel weights; activations are quantized to int8
per batch at run time and the matmuls run in int8 (``eff_mode = "real-kernel"``).

Backends (``backend``):

* ``torch_ao``: ``torch.ao.quantization.quantize_dynamic`` (fbgemm/onednn kernels);
* ``torchao``: ``torchao.quantization.quantize_(model, Int8DynamicActivationInt8WeightConfig())``;
* ``auto``: ``torch_ao``. Measured on this project's CPU machine (GPT-2-small shape, batch 1 x
  128, 1 thread, torch 2.13 / torchao 0.18): fp32 0.56 s, torch_ao 0.33 s, torchao 16.9 s per
  forward -- torchao's int8 path has no fast eager CPU kernel here, so ``auto`` picks torch_ao.
  ``benchmarks/quantization.py`` re-measures it.

Before quantizing, all float tensors are rounded to fp16 values, so the export stores the
tensors that stay in floating point (embeddings, LayerNorm, biases) losslessly in fp16. The
export holds the int8 weight codes and fp32 per-channel scales; the loader re-runs the same
backend on a model rebuilt from ``config.json`` and installs the stored codes, so the reload
runs the same kernels on the same integers: logits match to 1e-5 (bit-identical in our tests).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import torch
from safetensors.torch import load_file, save_file
from torch import Tensor, nn

from compbench.errors import ConfigError
from compbench.methods.base import Method, MethodContext
from compbench.methods.export import write_manifest
from compbench.methods.packing import build_from_config
from compbench.methods.quantizers import conv1d_to_linear

BACKENDS = ("auto", "torch_ao", "torchao")
#: What ``auto`` resolves to on CPU (see the module docstring for the measurement).
AUTO_BACKEND = "torch_ao"
WEIGHTS_FILE = "model.safetensors"
LAYOUT_FILE = "int8_layout.json"


def _dynamic_linear_cls() -> type[nn.Module]:
    return torch.ao.nn.quantized.dynamic.Linear


def apply_int8(model: nn.Module, backend: str) -> nn.Module:
    """Convert Conv1D to Linear and quantize every Linear dynamically to int8 with ``backend``."""
    conv1d_to_linear(model)
    if backend == "torch_ao":
        qconfig = {nn.Linear: torch.ao.quantization.per_channel_dynamic_qconfig}
        return torch.ao.quantization.quantize_dynamic(model, qconfig, dtype=torch.qint8, inplace=True)
    from torchao.quantization import Int8DynamicActivationInt8WeightConfig, quantize_

    quantize_(model, Int8DynamicActivationInt8WeightConfig())
    return model


def _quantized_linears(model: nn.Module, backend: str) -> dict[str, nn.Module]:
    if backend == "torch_ao":
        cls = _dynamic_linear_cls()
        return {name: m for name, m in model.named_modules() if isinstance(m, cls)}
    from torchao.quantization import Int8Tensor

    return {name: m for name, m in model.named_modules()
            if isinstance(m, nn.Linear) and isinstance(m.weight, Int8Tensor)}


@dataclass
class DynamicInt8PTQ(Method):
    """Dynamic int8 PTQ (int8 weights per channel, int8 activations per batch) on CPU kernels.

    Attributes:
        backend: ``auto`` | ``torch_ao`` | ``torchao`` (see the module docstring).
    """

    name: str = "ptq_dynamic_int8"
    backend: str = "auto"

    eff_mode: ClassVar[str] = "real-kernel"

    def __post_init__(self) -> None:
        if self.backend not in BACKENDS:
            raise ConfigError(f"backend={self.backend!r} is unknown; choose one of: {', '.join(BACKENDS)}.")

    @property
    def resolved_backend(self) -> str:
        """The backend that actually runs."""
        return AUTO_BACKEND if self.backend == "auto" else self.backend

    def check(self, ctx: MethodContext) -> None:
        super().check(ctx)
        if ctx.device is not None and torch.device(ctx.device).type != "cpu":
            raise ConfigError(
                "ptq_dynamic_int8 runs int8 CPU kernels, but this run's device is "
                f"{torch.device(ctx.device).type}; run it with trainer.accelerator=cpu or use ptq_llm_int8 on GPU."
            )

    def finalize(self, model: nn.Module, ctx: MethodContext) -> nn.Module:
        """Round float tensors to fp16 values, then quantize all Linear layers to int8."""
        model = model.cpu().eval()
        with torch.no_grad():
            for tensor in model.state_dict(keep_vars=True).values():
                if tensor.is_floating_point():
                    tensor.data.copy_(tensor.data.half().float())
        return apply_int8(model, self.resolved_backend)

    def row_params(self) -> dict[str, Any]:
        """Parameters plus ``backend_ran`` (what ``auto`` resolved to)."""
        return {**super().row_params(), "backend_ran": self.resolved_backend}

    def export(self, model: nn.Module, out_dir: Path, ctx: MethodContext) -> dict[str, Any]:
        """int8 codes + fp32 scales of each Linear, fp16 for the rest (see module docstring)."""
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        model.config.save_pretrained(out_dir)
        backend = self.resolved_backend
        linears = _quantized_linears(model, backend)
        tensors: dict[str, Tensor] = {}
        for name, module in linears.items():
            codes, scales, bias = _int8_parts(module, backend)
            tensors[f"{name}.qweight"] = codes.contiguous()
            tensors[f"{name}.qscale"] = scales.float().contiguous()
            if bias is not None:
                tensors[f"{name}.bias"] = bias.detach().half().contiguous()
        seen: set[int] = set()
        aliases: dict[str, list[str]] = {}
        for key, tensor in model.state_dict(keep_vars=True).items():
            if not isinstance(tensor, Tensor) or any(key.startswith(f"{name}.") for name in linears):
                continue
            if id(tensor) in seen:
                primary = next(k for k, v in aliases.items() if id(v[0]) == id(tensor))
                aliases[primary].append(key)
                continue
            seen.add(id(tensor))
            aliases[key] = [tensor]
            tensors[key] = (tensor.detach().half() if tensor.is_floating_point() else tensor.detach()).contiguous()
        save_file(tensors, str(out_dir / WEIGHTS_FILE))
        layout = {"linears": sorted(linears), "aliases": {k: v[1:] for k, v in aliases.items() if len(v) > 1}}
        (out_dir / LAYOUT_FILE).write_text(json.dumps(layout, separators=(",", ":")))
        return write_manifest(
            out_dir,
            {
                "format": "int8-dynamic",
                "loader": "compbench.methods.ptq_dynamic_int8:load_int8_export",
                "method": self.name,
                "model_class": type(model).__name__,
                "conv1d_converted": True,
                **self.row_params(),
            },
        )


def _int8_parts(module: nn.Module, backend: str) -> tuple[Tensor, Tensor, Tensor | None]:
    """(int8 codes [out, in], per-channel scales [out], bias) of one quantized Linear."""
    if backend == "torch_ao":
        weight = module.weight()
        if weight.qscheme() != torch.per_channel_affine:
            raise ValueError(f"expected per-channel int8 weights, got {weight.qscheme()}")
        return weight.int_repr(), weight.q_per_channel_scales(), module.bias()
    return module.weight.qdata, module.weight.scale.reshape(-1), module.bias


@torch.no_grad()
def load_int8_export(out_dir: Path, manifest: dict[str, Any]) -> nn.Module:
    """Rebuild the HF model, quantize it with the same backend and install the stored int8 codes."""
    out_dir = Path(out_dir)
    backend = manifest["backend_ran"]
    model = build_from_config(out_dir, manifest).eval()
    apply_int8(model, backend)
    layout = json.loads((out_dir / LAYOUT_FILE).read_text())
    stored = load_file(str(out_dir / WEIGHTS_FILE))
    linears = _quantized_linears(model, backend)
    if sorted(linears) != layout["linears"]:
        raise ConfigError(f"export in {out_dir} does not match its config's Linear layers; re-export it.")
    for name, module in linears.items():
        codes, scales = stored[f"{name}.qweight"], stored[f"{name}.qscale"]
        bias = stored.get(f"{name}.bias")
        bias = None if bias is None else bias.float()
        if backend == "torch_ao":
            qweight = torch._make_per_channel_quantized_tensor(
                codes, scales.double(), torch.zeros(len(scales), dtype=torch.long), 0
            )
            module.set_weight_bias(qweight, bias)
        else:
            module.weight.qdata.copy_(codes)
            module.weight.scale.copy_(scales.reshape(module.weight.scale.shape))
            if bias is not None:
                module.bias.copy_(bias)
    # Copy tensor by tensor: quantized modules' own state-dict hooks expect all their keys.
    target = {k: v for k, v in model.state_dict(keep_vars=True).items()
              if isinstance(v, Tensor) and not any(k.startswith(f"{name}.") for name in linears)}
    filled = set()
    for key, tensor in stored.items():
        if key.rsplit(".", 1)[0] in linears:
            continue
        for name in [key, *layout["aliases"].get(key, [])]:
            if name not in target:
                raise ConfigError(f"export in {out_dir} holds {name!r}, which its config's model lacks; re-export it.")
            target[name].data.copy_(tensor)
            filled.add(name)
    missing = sorted(set(target) - filled)
    if missing:
        raise ConfigError(f"export in {out_dir} lacks {missing[:3]} of its config's model; re-export it.")
    return model
