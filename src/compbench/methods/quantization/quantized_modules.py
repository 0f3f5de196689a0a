"""Quantized module wrappers: ``QuantLinear`` and ``QuantEmbedding`` fake-quantize a layer's
weight (and a linear layer's input) with a :mod:`quantizers` quantizer; ``quantize_modules``
swaps them into a model, ``freeze_quantized`` bakes the quantized weights back in.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call

from compbench.methods.quantization.quantizers import QuantizedWeight, Quantizer, get_quantizer
from compbench.models.architecture import conv1d_to_linear, is_position_table, word_embedding_weight_ids


class QuantLinear(nn.Linear):
    """An ``nn.Linear`` whose weight (and optionally input) is fake-quantized.

    It shares the wrapped layer's parameters (tied weights stay tied) and is still an
    ``nn.Linear``, so code that inspects layer types keeps working.

    Args:
        linear: the layer to wrap.
        weight_quantizer: quantizer of the weight, or None (weight already frozen).
        act_quantizer: quantizer of the input activations, or None.
    """

    def __init__(self, linear: nn.Linear, weight_quantizer: Quantizer | None, act_quantizer: Quantizer | None = None):
        nn.Module.__init__(self)
        self.in_features, self.out_features = linear.in_features, linear.out_features
        self.weight = linear.weight
        self.bias = linear.bias
        self.weight_quantizer = weight_quantizer
        self.act_quantizer = act_quantizer

    def forward(self, x: Tensor) -> Tensor:
        if self.act_quantizer is not None:
            x = self.act_quantizer(x)
        weight = self.weight if self.weight_quantizer is None else self.weight_quantizer(self.weight)
        return F.linear(x, weight, self.bias)


class QuantEmbedding(nn.Module):
    """Wraps an ``nn.Embedding`` (or a subclass) and looks up its fake-quantized weight.

    The lookup runs the wrapped module's own ``forward`` with the quantized weight swapped in
    (``torch.func.functional_call``), so subclasses such as BART's scaled embedding keep their
    behaviour.
    """

    def __init__(self, embedding: nn.Embedding, weight_quantizer: Quantizer | None):
        super().__init__()
        self.embedding = embedding
        self.weight_quantizer = weight_quantizer

    @property
    def weight(self) -> nn.Parameter:
        return self.embedding.weight

    @property
    def num_embeddings(self) -> int:
        return self.embedding.num_embeddings

    @property
    def embedding_dim(self) -> int:
        return self.embedding.embedding_dim

    def forward(self, input_ids: Tensor, *args, **kwargs) -> Tensor:
        if self.weight_quantizer is None:
            return self.embedding(input_ids, *args, **kwargs)
        weight = self.weight_quantizer(self.embedding.weight)
        return functional_call(self.embedding, {"weight": weight}, (input_ids, *args), kwargs)


def quantize_modules(
    model: nn.Module,
    *,
    w_bits: int,
    e_bits: int | None = None,
    a_bits: int | None = None,
    quantizer: str = "minmax",
    per_channel: bool = True,
    group_size: int | None = None,
    symmetric: bool = True,
    act_quantizer: str | None = None,
    skip: tuple[str, ...] = (),
) -> nn.Module:
    """Wrap, in place, every Linear in :class:`QuantLinear` and word embeddings in :class:`QuantEmbedding`.

    GPT-2 ``Conv1D`` layers are converted to ``nn.Linear`` first. Weights are initialised into
    their quantizers now (so learned clips/steps exist before the optimizer is built).
    A weight shared by several modules (tied ``wte``/``lm_head``, BART's ``shared`` and
    ``embed_tokens``) gets one quantizer at ``e_bits``, shared by all of them.

    Args:
        model: a transformers model; its class is unchanged.
        w_bits: bit-width of Linear weights.
        e_bits: bit-width of word embeddings (and tied output heads); None leaves them fp32.
        a_bits: bit-width of Linear inputs; None, 16 or 32 means no activation quantization.
        quantizer: registered quantizer name for weights (``minmax``, ``pact``, ``lsq``, ...).
        per_channel: per-row weight steps (else per tensor).
        group_size: per-group weight steps along the input dimension.
        symmetric: symmetric weight codes.
        act_quantizer: registered quantizer for activations (per tensor); defaults to ``quantizer``.
        skip: substrings of module names to leave untouched (e.g. ``("classifier",)``).
    """
    conv1d_to_linear(model)
    weight_cls = get_quantizer(quantizer)
    act_cls = get_quantizer(act_quantizer or quantizer)
    embedding_ids = word_embedding_weight_ids(model)
    quantize_acts = a_bits is not None and a_bits < 16
    by_weight: dict[int, Quantizer] = {}
    replaced: dict[int, nn.Module] = {}

    def weight_quantizer(weight: Tensor, bits: int) -> Quantizer:
        if id(weight) not in by_weight:
            q = weight_cls(bits, per_channel=per_channel, group_size=group_size, symmetric=symmetric)
            q.grouped(weight)  # refuse a group size that does not divide the rows, now
            q.init_from(weight)
            by_weight[id(weight)] = q.to(weight.device)
        return by_weight[id(weight)]

    for name, parent in list(model.named_modules(remove_duplicate=False)):
        for child_name, child in list(parent.named_children()):
            full = f"{name}.{child_name}" if name else child_name
            if any(s in full for s in skip) or isinstance(child, (QuantLinear, QuantEmbedding)):
                continue
            if id(child) in replaced:
                setattr(parent, child_name, replaced[id(child)])
                continue
            new: nn.Module | None = None
            if isinstance(child, nn.Linear):
                tied = id(child.weight) in embedding_ids
                if tied and e_bits is None:
                    continue  # an output head tied to unquantized embeddings stays as it is
                bits = e_bits if tied else w_bits
                act = act_cls(a_bits, per_channel=False).to(child.weight.device) if quantize_acts else None
                new = QuantLinear(child, weight_quantizer(child.weight, bits), act)
            elif (e_bits is not None and isinstance(child, nn.Embedding) and id(child.weight) in embedding_ids
                  and not is_position_table(full)):
                new = QuantEmbedding(child, weight_quantizer(child.weight, e_bits))
            if new is not None:
                replaced[id(child)] = new
                setattr(parent, child_name, new)
    return model


@torch.no_grad()
def freeze_quantized(model: nn.Module) -> nn.Module:
    """Replace fake-quantized weights by their frozen dequantized values, in place.

    Each frozen weight's :class:`QuantizedWeight` is kept on its module as ``quantized_weight``
    (``packing.py`` exports it). Modules with no activation quantizer go back to the plain
    ``nn.Linear`` / embedding they wrapped, so the model is the HF model with quantized weights;
    those with one stay :class:`QuantLinear` with ``weight_quantizer=None``.
    """
    frozen: dict[int, QuantizedWeight] = {}
    replaced: dict[int, nn.Module] = {}
    for name, parent in list(model.named_modules(remove_duplicate=False)):
        for child_name, child in list(parent.named_children()):
            if not isinstance(child, (QuantLinear, QuantEmbedding)):
                continue
            if id(child) in replaced:
                setattr(parent, child_name, replaced[id(child)])
                continue
            weight = child.weight
            if child.weight_quantizer is not None and id(weight) not in frozen:
                qw = child.weight_quantizer.quantize(weight)
                weight.data.copy_(qw.dequantize().to(weight.dtype))
                frozen[id(weight)] = qw
            if isinstance(child, QuantEmbedding):
                plain = child.embedding
            elif child.act_quantizer is None:
                plain = nn.Linear(child.in_features, child.out_features, bias=child.bias is not None, device="meta")
                plain.weight, plain.bias = child.weight, child.bias
            else:
                child.weight_quantizer = None
                plain = child
            if id(weight) in frozen:
                plain.quantized_weight = frozen[id(weight)]
            replaced[id(child)] = plain
            setattr(parent, child_name, plain)
    return model
