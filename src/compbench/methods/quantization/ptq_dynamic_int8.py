"""``method=ptq_dynamic_int8``: post-training dynamic int8 quantization on real CPU kernels.

Every ``nn.Linear`` (GPT-2's ``Conv1D`` layers are converted first: torch's dynamic quantization
silently skips them) gets int8 per-output-channel weights; activations are quantized to int8
per batch at run time and the matmuls run in int8 (``eff_mode = "real-kernel"``).

Backends (``backend``):

* ``torch_ao``: ``torch.ao.quantization.quantize_dynamic`` (fbgemm/onednn kernels);
* ``torchao``: ``torchao.quantization.quantize_(model, Int8DynamicActivationInt8WeightConfig())``;
* ``auto``: ``torch_ao``, because torchao's eager int8 path has no fast CPU kernel (the
  measurement is in ``docs/benchmarks.md``; ``compbench-bench --only speedup`` re-measures
  it).

Tied embeddings (GPT-2's ``wte``/``lm_head``, BART's ``shared``/``embed_tokens``/``lm_head``):
the output head is quantized like every Linear, and every input embedding sharing its weight
then looks up the head's *dequantized int8 codes* (``codes * per-row scale``, the head's rows
being the embedding's rows). The tied tensor is thus one int8 tensor + per-row scales, stored
once in the export (as the head's ``qweight``/``qscale``). The embeddings hold those values as a
fp32 **non-persistent buffer** named ``weight`` (``nn.Embedding.forward`` and BART's scaled
embedding keep working): non-persistent because it is derived state, rebuilt at load time from
the stored codes, so it is neither exported nor counted by ``count_parameters`` (the head's
int8 weight counts the tensor once). We keep a fp32 lookup table of ``code * scale`` rather
than ``torch.ao.nn.quantized.Embedding``: the table equals the head's dequantized weight by
construction, whereas that module needs the codes re-expressed as quint8 with float zero points
(``code + 128``, zero point 128) and its rowwise kernel computes ``code * scale + bias`` (equal
to ``code * scale`` in practice, but not by construction); its
``weight`` is a method, not a tensor, and it would drop BART's ``embed_scale`` wrapper class.
Embedding lookups cost the same as before; RAM holds the fp32 table beside the head's packed
int8 copy, as before (the quantized module would save 3 bytes per table entry in RAM, not on disk).

Before quantizing, all float tensors are rounded to fp16 values, so the export stores the
tensors that stay in floating point (position embeddings, LayerNorm, biases) losslessly in fp16.
The export holds the int8 weight codes and fp32 per-channel scales; the loader re-runs the same
backend on a model rebuilt from ``config.json``, installs the stored codes and re-derives the
tied embeddings from them, so the reload runs the same kernels on the same integers: logits
match to 1e-5 (bit-identical in our tests: max abs diff 0).
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
from compbench.methods.export import tied_groups, write_manifest
from compbench.methods.quantization.packing import build_for_loading
from compbench.models.architecture import conv1d_to_linear

BACKENDS = ("auto", "torch_ao", "torchao")
#: What ``auto`` resolves to on CPU (see the module docstring for the measurement).
AUTO_BACKEND = "torch_ao"
WEIGHTS_FILE = "model.safetensors"
LAYOUT_FILE = "int8_layout.json"


def _dynamic_linear_cls() -> type[nn.Module]:
    return torch.ao.nn.quantized.dynamic.Linear


def tied_embeddings(model: nn.Module) -> tuple[str | None, list[str]]:
    """(name of the output head, names of the embeddings sharing its weight); (None, []) if untied."""
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    if head is None or not isinstance(getattr(head, "weight", None), Tensor):
        return None, []
    head_name = next(name for name, module in model.named_modules() if module is head)
    embeddings = [name for name, module in model.named_modules()
                  if isinstance(module, nn.Embedding) and module.weight is head.weight]
    return (head_name, embeddings) if embeddings else (None, [])


@torch.no_grad()
def tie_embeddings_to_int8_head(model: nn.Module, head_name: str, embedding_names: list[str], backend: str) -> None:
    """Make each embedding look up the dequantized int8 codes of the quantized head ``head_name``.

    All embeddings share one fp32 tensor, a non-persistent buffer (see the module docstring).
    """
    codes, scales, _ = _int8_parts(model.get_submodule(head_name), backend)
    dequantized = codes.float() * scales.float().reshape(-1, 1)
    for name in embedding_names:
        embedding = model.get_submodule(name)
        if tuple(embedding.weight.shape) != tuple(dequantized.shape):
            raise ValueError(f"{name} has shape {tuple(embedding.weight.shape)}, its tied head {tuple(dequantized.shape)}")
        del embedding.weight
        embedding.register_buffer("weight", dequantized, persistent=False)


def apply_int8(model: nn.Module, backend: str) -> nn.Module:
    """Convert Conv1D to Linear, quantize every Linear dynamically to int8 with ``backend`` and
    point embeddings tied to the output head at the head's dequantized int8 codes."""
    conv1d_to_linear(model)
    head_name, embedding_names = tied_embeddings(model)
    if backend == "torch_ao":
        qconfig = {nn.Linear: torch.ao.quantization.per_channel_dynamic_qconfig}
        torch.ao.quantization.quantize_dynamic(model, qconfig, dtype=torch.qint8, inplace=True)
    else:
        from torchao.quantization import Int8DynamicActivationInt8WeightConfig, quantize_

        quantize_(model, Int8DynamicActivationInt8WeightConfig())
    if head_name is not None:
        tie_embeddings_to_int8_head(model, head_name, embedding_names, backend)
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
    #: torch's dynamic int8 kernels (fbgemm/onednn) exist on the CPU only, so
    #: ``evaluation.device=auto`` keeps the model there even on a CUDA machine.
    inference_devices: ClassVar[tuple[str, ...]] = ("cpu",)

    def __post_init__(self) -> None:
        if self.backend not in BACKENDS:
            raise ConfigError(f"backend={self.backend!r} is unknown; choose one of: {', '.join(BACKENDS)}.")

    @property
    def resolved_backend(self) -> str:
        """The backend that actually runs."""
        return AUTO_BACKEND if self.backend == "auto" else self.backend

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
        """int8 codes + fp32 scales of each Linear (the tied embedding/head once), fp16 for the rest."""
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        model.config.save_pretrained(out_dir)
        backend = self.resolved_backend
        linears = _quantized_linears(model, backend)
        head_name, embedding_names = _tied_to_int8_head(model, linears)
        tensors: dict[str, Tensor] = {}
        for name, module in linears.items():
            codes, scales, bias = _int8_parts(module, backend)
            tensors[f"{name}.qweight"] = codes.contiguous()
            tensors[f"{name}.qscale"] = scales.float().contiguous()
            if bias is not None:
                tensors[f"{name}.bias"] = bias.detach().half().contiguous()
        state = {key: tensor for key, tensor in model.state_dict(keep_vars=True).items()
                 if isinstance(tensor, Tensor) and not any(key.startswith(f"{name}.") for name in linears)}
        groups = tied_groups(state)
        for key in groups:
            tensor = state[key].detach()
            tensors[key] = (tensor.half() if tensor.is_floating_point() else tensor).contiguous()
        save_file(tensors, str(out_dir / WEIGHTS_FILE))
        layout = {
            "linears": sorted(linears),
            "aliases": {kept: names for kept, names in groups.items() if names},
            # Embeddings rebuilt from this head's codes at load time (not stored themselves).
            "tied_to_head": {head_name: embedding_names} if head_name is not None else {},
        }
        (out_dir / LAYOUT_FILE).write_text(json.dumps(layout, separators=(",", ":")))
        return write_manifest(
            out_dir,
            {
                "format": "int8-dynamic",
                "loader": "compbench.methods.quantization.ptq_dynamic_int8:load_int8_export",
                "method": self.name,
                "model_class": type(model).__name__,
                "conv1d_converted": True,
                "backend_ran": self.resolved_backend,
                "params": self.manifest_params(),
            },
        )


def _tied_to_int8_head(model: nn.Module, linears: dict[str, nn.Module]) -> tuple[str | None, list[str]]:
    """(quantized head, embeddings whose non-persistent ``weight`` was derived from it) of a finalized model."""
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    head_name = next((name for name, module in linears.items() if module is head), None)
    embeddings = [name for name, module in model.named_modules()
                  if isinstance(module, nn.Embedding) and "weight" in module._non_persistent_buffers_set]
    return (head_name, embeddings) if head_name is not None and embeddings else (None, [])


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
    model = build_for_loading(out_dir, manifest).eval()
    apply_int8(model, backend)
    layout = json.loads((out_dir / LAYOUT_FILE).read_text())
    stored = load_file(str(out_dir / WEIGHTS_FILE))
    linears = _quantized_linears(model, backend)
    if sorted(linears) != layout["linears"]:
        raise ConfigError(f"export in {out_dir} does not match its config's Linear layers; re-export it.")
    head_name, embedding_names = _tied_to_int8_head(model, linears)
    tied = {head_name: embedding_names} if head_name is not None else {}
    if tied != layout.get("tied_to_head", {}):
        raise ConfigError(f"export in {out_dir} does not match its config's tied embeddings; re-export it.")
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
    for head_name, embedding_names in layout.get("tied_to_head", {}).items():
        tie_embeddings_to_int8_head(model, head_name, embedding_names, backend)
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
