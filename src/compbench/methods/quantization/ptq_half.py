"""``method=ptq_half``: cast the fine-tuned model to bfloat16 or float16 (post-training, no data).

Every floating-point parameter and buffer is cast to ``dtype``; the forward then runs in that
dtype on the device's native half-precision kernels (``eff_mode = "real-kernel"``): on CPUs with
AMX-BF16 / AVX-512-BF16 oneDNN runs bf16 matmuls natively, on CUDA both dtypes use tensor cores.
The export is ``save_pretrained`` safetensors in that dtype (2 bytes per weight: half the fp32
file), and the loader rebuilds the model in the same dtype, so the reload is bit-identical.

Choices (ours; no paper defines this baseline): ``dtype=bfloat16`` by default because it keeps
fp32's exponent range (no overflow in attention scores or LayerNorm statistics without loss
scaling); its speed is measured by ``python -m compbench.bench`` (``results/perf/SUMMARY.md``:
on this project's CPU, without AMX, bf16 ran 2.2x fp32 at the GPT-2-small shape, behind dynamic
int8's 2.8-3.3x); ``dtype=float16`` keeps 3 more mantissa bits
and suits GPUs without bf16. ``fp32_logits=true`` (default) casts the output logits back to
float32 so that losses, calibration and every downstream metric are computed in the same
precision for every method (a one-pass copy of the logits, included in the timed forward).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import nn

from compbench.errors import ConfigError
from compbench.methods.base import Method, MethodContext
from compbench.methods.export import model_class, save_hf_export

DTYPES = {"bfloat16": torch.bfloat16, "float16": torch.float16}


def _logits_to_fp32(module: nn.Module, args: Any, output: Any) -> Any:
    """Forward hook: the half-precision model's logits as float32 (losses are already fp32 in HF)."""
    logits = getattr(output, "logits", None)
    if isinstance(logits, torch.Tensor) and logits.dtype != torch.float32:
        output.logits = logits.float()
    return output


def cast_half(model: nn.Module, dtype: torch.dtype, fp32_logits: bool) -> nn.Module:
    """Cast ``model`` in place to ``dtype`` (and register the fp32-logits hook if asked)."""
    model = model.to(dtype)
    if getattr(model, "config", None) is not None:
        model.config.dtype = dtype
    if fp32_logits and not getattr(model, "_compbench_fp32_logits", False):
        model.register_forward_hook(_logits_to_fp32)
        model._compbench_fp32_logits = True
    return model


@dataclass
class HalfPrecisionPTQ(Method):
    """Post-training cast to bf16 / fp16, run on native half-precision kernels.

    Attributes:
        dtype: ``bfloat16`` (default) | ``float16``.
        fp32_logits: cast the output logits back to float32 (see the module docstring).
    """

    name: str = "ptq_half"
    dtype: str = "bfloat16"
    fp32_logits: bool = True

    eff_mode: ClassVar[str] = "real-kernel"

    def __post_init__(self) -> None:
        if self.dtype not in DTYPES:
            raise ConfigError(f"ptq_half dtype={self.dtype!r} is unknown; choose one of: {', '.join(DTYPES)}.")

    @property
    def torch_dtype(self) -> torch.dtype:
        return DTYPES[self.dtype]

    def finalize(self, model: nn.Module, ctx: MethodContext) -> nn.Module:
        return cast_half(model.eval(), self.torch_dtype, self.fp32_logits)

    def export(self, model: nn.Module, out_dir: Path, ctx: MethodContext) -> dict[str, Any]:
        """safetensors in ``dtype`` (half the fp32 bytes); the loader restores the same dtype."""
        return save_hf_export(model, out_dir, method=self.name, format="hf-half",
                              loader="compbench.methods.quantization.ptq_half:load_half_export",
                              params=self.manifest_params())


def load_half_export(out_dir: Path, manifest: dict[str, Any]) -> nn.Module:
    """Rebuild the model in the export's dtype (never upcast: that would double its memory)."""
    # Manifests written before ``params`` existed kept dtype / fp32_logits (JSON values) at the top.
    params = manifest.get("params", manifest)
    dtype = params.get("dtype")
    if dtype not in DTYPES:
        raise ConfigError(f"export in {out_dir} has no valid half-precision dtype ({dtype!r}); re-export it.")
    model = model_class(out_dir, manifest).from_pretrained(out_dir, dtype=DTYPES[dtype])
    return cast_half(model, DTYPES[dtype], bool(params.get("fp32_logits", True)))
