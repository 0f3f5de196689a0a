"""Architecture facts, in one place: where a model family keeps its blocks, attention and
feed-forward projections, embeddings and positional tables, and the one piece of model surgery
every method needs (GPT-2's ``Conv1D`` -> ``nn.Linear``).

Methods consult this module instead of knowing model types themselves: ``kd`` finds its layer
stacks here, ``prune_structured`` its heads and neurons, the quantizers the tables they leave in
fp16. A new family is one :class:`Architecture` entry in :data:`ARCHITECTURES` (plus a tiny twin
under ``conf/model/``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from compbench.errors import ConfigError


@dataclass(frozen=True)
class Stack:
    """One stack of transformer blocks (encoders and decoders have one, BART has two).

    Attributes:
        name: ``layers`` (single-stack models), ``encoder`` or ``decoder``.
        module_path: dotted path of the ``nn.ModuleList`` holding the blocks.
        layers_attr: config attribute giving the number of blocks.
        heads_attr: config attribute giving the number of attention heads.
        output_prefix: prefix of the HF output fields (``""``, ``encoder_``, ``decoder_``).
        mask_side: ``valid_token_mask`` side aligned with this stack's positions.
    """

    name: str
    module_path: str
    layers_attr: str
    heads_attr: str
    output_prefix: str
    mask_side: str


@dataclass(frozen=True)
class AttentionUnit:
    """One attention module: where its projections live (paths from the model root)."""

    path: str
    q: str
    k: str
    v: str
    o: str
    fused_qkv: bool = False  # GPT-2: one Conv1D c_attn = [q | k | v]


@dataclass(frozen=True)
class FfnUnit:
    """One feed-forward block: up projection (hidden -> inner) and down projection (inner -> hidden)."""

    up: str
    down: str


@dataclass(frozen=True)
class Architecture:
    """The facts of one family of HF model types.

    Attributes:
        stacks: ``(name, path below the base model, layers_attr, heads_attr, output_prefix,
            mask_side)`` for each block stack, in forward order.
        attention: ``(layer path, stack name) -> attention units of that block``.
        ffn: ``layer path -> the block's feed-forward unit``.
    """

    stacks: tuple[tuple[str, str, str, str, str, str], ...]
    attention: Callable[[str, str], list[AttentionUnit]]
    ffn: Callable[[str], FfnUnit]


def _bert_attention(layer: str, _stack: str) -> list[AttentionUnit]:
    a = f"{layer}.attention.self"
    return [AttentionUnit(a, f"{a}.query", f"{a}.key", f"{a}.value", f"{layer}.attention.output.dense")]


def _gpt2_attention(layer: str, _stack: str) -> list[AttentionUnit]:
    a = f"{layer}.attn"
    return [AttentionUnit(a, f"{a}.c_attn", f"{a}.c_attn", f"{a}.c_attn", f"{a}.c_proj", True)]


def _bart_attention(layer: str, stack: str) -> list[AttentionUnit]:
    names = ["self_attn"] + (["encoder_attn"] if stack == "decoder" else [])
    return [AttentionUnit(f"{layer}.{n}", f"{layer}.{n}.q_proj", f"{layer}.{n}.k_proj", f"{layer}.{n}.v_proj",
                          f"{layer}.{n}.out_proj") for n in names]


_BERT_LIKE = Architecture(
    stacks=(("layers", "encoder.layer", "num_hidden_layers", "num_attention_heads", "", "input"),),
    attention=_bert_attention,
    ffn=lambda layer: FfnUnit(f"{layer}.intermediate.dense", f"{layer}.output.dense"),
)

#: model_type -> facts. XLM-R/AfriBERTa, RoBERTa and BERT (MiniLM) share one layout.
ARCHITECTURES: dict[str, Architecture] = {
    "xlm-roberta": _BERT_LIKE,
    "roberta": _BERT_LIKE,
    "bert": _BERT_LIKE,
    "gpt2": Architecture(
        # GPT2Config maps num_hidden_layers/num_attention_heads to n_layer/n_head.
        stacks=(("layers", "h", "num_hidden_layers", "num_attention_heads", "", "input"),),
        attention=_gpt2_attention,
        ffn=lambda layer: FfnUnit(f"{layer}.mlp.c_fc", f"{layer}.mlp.c_proj"),
    ),
    "bart": Architecture(
        stacks=(("encoder", "encoder.layers", "encoder_layers", "encoder_attention_heads", "encoder_", "input"),
                ("decoder", "decoder.layers", "decoder_layers", "decoder_attention_heads", "decoder_", "target")),
        attention=_bart_attention,
        ffn=lambda layer: FfnUnit(f"{layer}.fc1", f"{layer}.fc2"),
    ),
}

#: Leaf names of positional and token-type tables: tiny next to the vocabulary (and BART's
#: positional module has its own forward), so the quantizers leave them in fp16 (see packing.py).
POSITION_TABLES = frozenset({"wpe", "position_embeddings", "embed_positions", "token_type_embeddings"})


def architecture(model: nn.Module, who: str = "compbench") -> Architecture:
    """The facts of ``model``'s type; ``who`` names the caller in the refusal."""
    model_type = model.config.model_type
    if model_type not in ARCHITECTURES:
        raise ConfigError(f"{who} does not know the {model_type!r} architecture; "
                          f"use one of {', '.join(sorted(ARCHITECTURES))}.")
    return ARCHITECTURES[model_type]


def layer_stacks(model: nn.Module, who: str = "compbench") -> list[Stack]:
    """The block stacks of a model of a known type (:data:`ARCHITECTURES`), in forward order."""
    prefix = model.base_model_prefix
    base = f"{prefix}." if prefix and hasattr(model, prefix) else ""  # a head model, or the base model itself
    return [Stack(name, f"{base}{path}", layers, heads, out, side)
            for name, path, layers, heads, out, side in architecture(model, who).stacks]


def find_stacks(model: nn.Module, who: str = "kd") -> list[Stack]:
    """:func:`layer_stacks` for a known type; for another HF model, a search by shape.

    The search (kept for hub checkpoints of other types): an encoder-decoder's stacks are the
    ``ModuleList``s ending in ``encoder.layers``/``decoder.layers`` (BART-like); otherwise the
    ``ModuleList`` of ``num_hidden_layers`` blocks that holds the most weights.
    """
    if model.config.model_type in ARCHITECTURES:
        return layer_stacks(model, who)
    config = model.config
    module_lists = {name: mod for name, mod in model.named_modules() if isinstance(mod, nn.ModuleList)}
    if getattr(config, "is_encoder_decoder", False):
        stacks = []
        for side in ("encoder", "decoder"):
            paths = [name for name in module_lists if name.endswith(f"{side}.layers")]
            if len(paths) != 1:
                raise ConfigError(
                    f"{who} cannot find the {side} blocks of {type(model).__name__}; it supports BART-like models."
                )
            stacks.append(Stack(side, paths[0], f"{side}_layers", f"{side}_attention_heads", f"{side}_",
                                "target" if side == "decoder" else "input"))
        return stacks
    depth = config.num_hidden_layers
    candidates = [name for name, mod in module_lists.items() if len(mod) == depth]
    if not candidates:
        raise ConfigError(f"{who} cannot find the {depth} transformer blocks of {type(model).__name__}.")
    # Several lists of the right length are possible in other architectures: the blocks hold the most weights.
    path = max(candidates, key=lambda name: sum(p.numel() for p in module_lists[name].parameters()))
    return [Stack("layers", path, "num_hidden_layers", "num_attention_heads", "", "input")]


def attention_units(model: nn.Module, who: str = "compbench") -> list[AttentionUnit]:
    """Every attention module of the model (BART decoders have self and cross attention)."""
    arch = architecture(model, who)
    return [unit for stack in layer_stacks(model, who) for i in range(len(model.get_submodule(stack.module_path)))
            for unit in arch.attention(f"{stack.module_path}.{i}", stack.name)]


def ffn_units(model: nn.Module, who: str = "compbench") -> list[FfnUnit]:
    """Every feed-forward block of the model."""
    arch = architecture(model, who)
    return [arch.ffn(f"{stack.module_path}.{i}") for stack in layer_stacks(model, who)
            for i in range(len(model.get_submodule(stack.module_path)))]


def is_position_table(name: str) -> bool:
    """Whether the module at dotted path ``name`` is a positional or token-type table."""
    return name.rsplit(".", 1)[-1] in POSITION_TABLES


def word_embedding_weight_ids(model: nn.Module) -> set[int]:
    """ids of the word-embedding weight tensors (tied output heads share one of them)."""
    ids = set()
    if hasattr(model, "get_input_embeddings"):
        emb = model.get_input_embeddings()
        if emb is not None:
            ids.add(id(emb.weight))
    return ids


def conv1d_to_linear(model: nn.Module) -> nn.Module:
    """Replace every HF GPT-2 ``Conv1D`` (``x @ W + b``, W is in x out) by the same ``nn.Linear``.

    torch's ``quantize_dynamic`` and our quantizers only see ``nn.Linear``; without this, GPT-2's
    attention and MLP layers would silently stay fp32. Exact: the weight is transposed, not
    recomputed. In place; returns ``model``.
    """
    from transformers.pytorch_utils import Conv1D

    for parent in list(model.modules()):
        for child_name, child in list(parent.named_children()):
            if isinstance(child, Conv1D):
                in_features, out_features = child.weight.shape
                linear = nn.Linear(in_features, out_features, bias=child.bias is not None,
                                   device=child.weight.device, dtype=child.weight.dtype)
                with torch.no_grad():
                    linear.weight.copy_(child.weight.t())
                    if child.bias is not None:
                        linear.bias.copy_(child.bias)
                linear.weight.requires_grad_(child.weight.requires_grad)
                setattr(parent, child_name, linear)
    return model
