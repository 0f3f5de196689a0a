"""``method=ptq_weight_only``: round-to-nearest (RTN) weight-only post-training quantization.

Each Linear weight (and, with ``e_bits``, the word embeddings and any output head tied to them)
is rounded to the nearest level of a symmetric (or asymmetric) grid whose step is set by the
absolute maximum of its row (``group_size=null``) or of each group of ``group_size`` input
features. No data and no training. Inference runs the dequantized weights in fp32
(``eff_mode = "fake-quant"``: no 2/3/4-bit CPU kernel is used); the export stores the packed
codes (``packing.py``), so its size on disk is the honest compressed size.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from torch import nn

from compbench.methods.base import Method, MethodContext
from compbench.methods.quantization.packing import round_unquantized_to_fp16, save_packed_export
from compbench.methods.quantization.quantized_modules import freeze_quantized, quantize_modules
from compbench.methods.quantization.quantizers import SUPPORTED_BITS, check_bits, check_group_size


@dataclass
class WeightOnlyPTQ(Method):
    """RTN weight-only quantization at 8/4/3/2 bits, per channel or per group.

    Attributes:
        w_bits: bit-width of Linear weights.
        e_bits: bit-width of word embeddings (and tied output heads); null keeps them fp32.
        group_size: input features per step; null = one step per output channel.
        symmetric: symmetric codes (zero point 0) or asymmetric (min/max with a zero point).
    """

    name: str = "ptq_weight_only"
    w_bits: int = 4
    e_bits: int | None = None
    group_size: int | None = None
    symmetric: bool = True

    eff_mode: ClassVar[str] = "fake-quant"

    def __post_init__(self) -> None:
        check_bits("w_bits", self.w_bits, SUPPORTED_BITS)
        check_bits("e_bits", self.e_bits, SUPPORTED_BITS, optional=True)
        check_group_size(self.group_size)

    def finalize(self, model: nn.Module, ctx: MethodContext) -> nn.Module:
        """Quantize the weights (RTN), freeze them and round the rest to fp16 (what is exported)."""
        quantize_modules(
            model, w_bits=self.w_bits, e_bits=self.e_bits, a_bits=None, quantizer="minmax",
            per_channel=True, group_size=self.group_size, symmetric=self.symmetric,
        )
        return round_unquantized_to_fp16(freeze_quantized(model))

    def export(self, model: nn.Module, out_dir: Path, ctx: MethodContext) -> dict[str, Any]:
        """Packed codes + fp16 steps in safetensors (see ``packing.py``)."""
        return save_packed_export(model, out_dir, self.name, params=self.manifest_params())
