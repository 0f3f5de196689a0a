"""``method=none``: the fine-tuned, uncompressed baseline."""

from __future__ import annotations

from dataclasses import dataclass

from compbench.methods.base import Method


@dataclass
class NoCompression(Method):
    """The fp32 fine-tuned model, exported as safetensors."""

    name: str = "none"
