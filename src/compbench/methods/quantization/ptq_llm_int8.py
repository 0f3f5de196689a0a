"""``method=ptq_llm_int8``: LLM.int8() (Dettmers et al., 2022) through bitsandbytes, CUDA only.

Every ``nn.Linear`` (GPT-2 ``Conv1D`` converted first) except the output head becomes a
``bitsandbytes.nn.Linear8bitLt``: int8 vector-wise matmul, with input feature columns whose
magnitude exceeds ``threshold`` computed in fp16 (the outlier decomposition). bitsandbytes is
imported only when a CUDA device is present; on CPU ``check`` refuses the run before any work.
The export is the HF model with dequantized-on-load int8 weights saved by bitsandbytes'
state dict (``SCB`` scales + int8 ``weight``) in safetensors.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import nn

from compbench.errors import ConfigError
from compbench.methods.base import Method, MethodContext
from compbench.methods.export import tied_groups, write_manifest
from compbench.methods.quantization.packing import build_for_loading
from compbench.models.architecture import conv1d_to_linear

#: Outlier threshold of the LLM.int8() paper (Dettmers et al., 2022, §3.2).
DEFAULT_THRESHOLD = 6.0


def _require_cuda(device: Any) -> None:
    if not torch.cuda.is_available() or (device is not None and torch.device(device).type != "cuda"):
        raise ConfigError(
            "ptq_llm_int8 needs a CUDA GPU (bitsandbytes' LLM.int8() kernels); on CPU use method=ptq_dynamic_int8."
        )


def _bnb():
    try:
        import bitsandbytes  # noqa: PLC0415  (lazy: CUDA-only dependency)
    except ImportError as exc:  # pragma: no cover - only reachable on a GPU machine
        raise ConfigError("ptq_llm_int8 needs bitsandbytes; install it on the GPU machine (pip install bitsandbytes).") from exc
    return bitsandbytes


def replace_with_int8(model: nn.Module, threshold: float, skip: tuple[str, ...]) -> nn.Module:
    """Swap every Linear (not in ``skip``) for ``Linear8bitLt``; weights quantize on ``.cuda()``."""
    bnb = _bnb()
    conv1d_to_linear(model)
    for name, parent in list(model.named_modules()):
        for child_name, child in list(parent.named_children()):
            full = f"{name}.{child_name}" if name else child_name
            if not isinstance(child, nn.Linear) or any(s in full for s in skip):
                continue
            int8 = bnb.nn.Linear8bitLt(child.in_features, child.out_features, bias=child.bias is not None,
                                       has_fp16_weights=False, threshold=threshold)
            int8.weight = bnb.nn.Int8Params(child.weight.data.half(), requires_grad=False, has_fp16_weights=False)
            if child.bias is not None:
                int8.bias = nn.Parameter(child.bias.data.half(), requires_grad=False)
            setattr(parent, child_name, int8)
    return model


@dataclass
class LLMInt8PTQ(Method):
    """LLM.int8() post-training quantization (bitsandbytes ``Linear8bitLt``).

    Attributes:
        threshold: outlier threshold; input features with larger magnitude stay in fp16.
        skip_modules: substrings of module names left in fp16 (the output head by default).
    """

    name: str = "ptq_llm_int8"
    threshold: float = DEFAULT_THRESHOLD
    skip_modules: tuple[str, ...] = ("lm_head", "classifier", "score")

    eff_mode: ClassVar[str] = "real-kernel"
    inference_devices: ClassVar[tuple[str, ...]] = ("cuda",)

    def __post_init__(self) -> None:
        if isinstance(self.threshold, bool) or not isinstance(self.threshold, (int, float)) or self.threshold < 0:
            raise ConfigError(f"threshold must be a number >= 0 (0 disables outlier decomposition), got {self.threshold!r}.")
        self.skip_modules = tuple(self.skip_modules)

    def check(self, ctx: MethodContext) -> None:
        super().check(ctx)
        _require_cuda(ctx.device)

    def finalize(self, model: nn.Module, ctx: MethodContext) -> nn.Module:
        """Half-precision model with int8 Linear layers on the GPU."""
        _require_cuda(ctx.device)
        model = replace_with_int8(model.half().cpu(), float(self.threshold), self.skip_modules)
        return model.to(ctx.device)

    def export(self, model: nn.Module, out_dir: Path, ctx: MethodContext) -> dict[str, Any]:
        """bitsandbytes' serialised int8 state (int8 ``weight`` + ``SCB`` scales) in safetensors."""
        from safetensors.torch import save_file

        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        model.config.save_pretrained(out_dir)
        full = model.state_dict()
        state = {key: full[key].detach().cpu().contiguous() for key in tied_groups(full)}
        save_file(state, str(out_dir / "model.safetensors"))
        return write_manifest(out_dir, {
            "format": "llm-int8", "loader": "compbench.methods.quantization.ptq_llm_int8:load_llm_int8_export",
            "method": self.name, "model_class": type(model).__name__, "conv1d_converted": True,
            "params": self.manifest_params(),
        })


def load_llm_int8_export(out_dir: Path, manifest: dict[str, Any]) -> nn.Module:
    """Rebuild the fp16 model with ``Linear8bitLt`` layers on the GPU and load the int8 state."""
    from safetensors.torch import load_file

    _require_cuda(None)
    model = build_for_loading(Path(out_dir), manifest).half()
    params = manifest["params"]
    model = replace_with_int8(model, float(params["threshold"]), tuple(params["skip_modules"])).cuda()
    model.load_state_dict(load_file(str(Path(out_dir) / "model.safetensors"), device="cuda"), strict=False)
    return model
