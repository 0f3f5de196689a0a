"""``method=prune_structured``: remove attention heads, FFN neurons and whole layers.

Heads and FFN neurons are ranked per layer by importance and physically cut out of the linear
layers, so the model really gets smaller (fewer parameters, smaller safetensors, less compute):

* ``importance=magnitude``: L1 norm of the weights a head / neuron owns.
* ``importance=gradient``: Michel et al. 2019 ("Are Sixteen Heads Really Better than One?"),
  I_h = E_x |dL(x)/d xi_h| for a gate xi_h multiplying the head's output, per example, the
  head's dimensions summed before the absolute value (see ``_gradient_scores``). The gates are
  forward pre-hooks on the output projections, so no attention code is patched.

transformers 5 no longer ships ``prune_heads`` or ``prune_conv1d_layer``, and its configs hold a
single head count, so shrinking is done here (``prune_linear_layer`` for ``nn.Linear``, by hand for
GPT-2's ``Conv1D``); the per-layer shapes go into the export manifest and the loader rebuilds
them before loading the weights. XLM-R, GPT-2 and BART attention reshape with ``-1`` heads, so
a layer with fewer heads runs unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import islice
from pathlib import Path
from typing import Any, Iterable

import torch
from torch import nn
from transformers.pytorch_utils import Conv1D, prune_linear_layer

from compbench.devices import model_device
from compbench.errors import ConfigError
from compbench.methods.base import Method, MethodContext
from compbench.methods.pruning.sparse_storage import load_sparse_export, save_sparse_export
from compbench.models.architecture import AttentionUnit, FfnUnit, Stack
from compbench.models.architecture import attention_units as _attention_units
from compbench.models.architecture import ffn_units as _ffn_units
from compbench.models.architecture import layer_stacks as _stacks

IMPORTANCES = ("magnitude", "gradient")
LAYER_DROPS = ("none", "keep_every_k", "top", "bottom")


# ---------------------------------------------------------------- architecture map
# Which modules are heads, neurons and layers: compbench.models.architecture.
def layer_stacks(model: nn.Module) -> list[Stack]:
    return _stacks(model, "prune_structured")


def attention_units(model: nn.Module) -> list[AttentionUnit]:
    return _attention_units(model, "prune_structured")


def ffn_units(model: nn.Module) -> list[FfnUnit]:
    return _ffn_units(model, "prune_structured")


def _num_heads(attn: nn.Module) -> int:
    return attn.num_heads if hasattr(attn, "num_heads") else attn.num_attention_heads


def _head_dim(attn: nn.Module) -> int:
    return attn.head_dim if hasattr(attn, "head_dim") else attn.attention_head_size


def _set_num_heads(attn: nn.Module, heads: int) -> None:
    if hasattr(attn, "num_heads"):  # GPT-2, BART
        attn.num_heads = heads
        if hasattr(attn, "split_size"):  # GPT-2 splits c_attn's output at split_size
            attn.split_size = heads * attn.head_dim
    else:  # XLM-R
        attn.num_attention_heads = heads
        attn.all_head_size = heads * attn.attention_head_size


# ---------------------------------------------------------------- slicing
def _replace(model: nn.Module, path: str, module: nn.Module) -> None:
    parent, _, child = path.rpartition(".")
    setattr(model.get_submodule(parent), child, module)


def _out_major(layer: nn.Module) -> torch.Tensor:
    """Weight as (out_features, in_features) whatever the layer type (Conv1D stores it transposed)."""
    return layer.weight.t() if isinstance(layer, Conv1D) else layer.weight


def _keep(model: nn.Module, path: str, index: torch.Tensor, outputs: bool) -> None:
    """Keep only ``index`` among a layer's outputs (``outputs=True``) or inputs."""
    layer = model.get_submodule(path)
    index = index.to(layer.weight.device)
    if isinstance(layer, nn.Linear):
        new = prune_linear_layer(layer, index, dim=0 if outputs else 1)
    elif isinstance(layer, Conv1D):
        # transformers 5 removed prune_conv1d_layer; Conv1D weight is (in, out), bias is (out,).
        dim = 1 if outputs else 0
        weight = layer.weight.index_select(dim, index).detach().clone()
        bias = layer.bias.detach().clone() if not outputs else layer.bias.index_select(0, index).detach().clone()
        new = Conv1D(weight.shape[1], weight.shape[0]).to(weight.device, weight.dtype)
        new.weight = nn.Parameter(weight, requires_grad=layer.weight.requires_grad)
        new.bias = nn.Parameter(bias, requires_grad=layer.bias.requires_grad)
    else:
        raise ConfigError(f"prune_structured cannot shrink {type(layer).__name__} at {path}.")
    _replace(model, path, new)


def _head_index(heads: Iterable[int], head_dim: int) -> torch.Tensor:
    return torch.cat([torch.arange(h * head_dim, (h + 1) * head_dim) for h in heads])


def keep_heads(model: nn.Module, unit: AttentionUnit, heads: list[int]) -> None:
    """Cut an attention module down to ``heads`` (indices into its current heads)."""
    attn = model.get_submodule(unit.path)
    head_dim, current = _head_dim(attn), _num_heads(attn)
    index = _head_index(sorted(heads), head_dim)
    if unit.fused_qkv:
        width = current * head_dim
        _keep(model, unit.q, torch.cat([index, index + width, index + 2 * width]), outputs=True)
    else:
        for path in (unit.q, unit.k, unit.v):
            _keep(model, path, index, outputs=True)
    _keep(model, unit.o, index, outputs=False)
    _set_num_heads(attn, len(heads))


def keep_neurons(model: nn.Module, unit: FfnUnit, neurons: list[int]) -> None:
    """Cut a feed-forward block down to ``neurons`` (indices into its current inner units)."""
    index = torch.tensor(sorted(neurons), dtype=torch.long)
    _keep(model, unit.up, index, outputs=True)
    _keep(model, unit.down, index, outputs=False)


def keep_layers_of(model: nn.Module, stack: str, config_attr: str, keep: list[int]) -> None:
    """Keep only layers ``keep`` of a layer stack, renumber them and update the config."""
    layers = model.get_submodule(stack)
    kept = nn.ModuleList([layers[i] for i in keep])
    for new_idx, layer in enumerate(kept):
        for sub in layer.modules():  # caches are indexed by layer_idx
            if hasattr(sub, "layer_idx"):
                sub.layer_idx = new_idx
    _replace(model, stack, kept)
    setattr(model.config, config_attr, len(kept))
    layer_types = getattr(model.config, "layer_types", None)
    if isinstance(layer_types, list) and len(layer_types) == len(layers):
        model.config.layer_types = [layer_types[i] for i in keep]


def describe_structure(model: nn.Module) -> dict[str, dict[str, int]]:
    """Per-module head counts and FFN widths: what the loader must rebuild before loading weights."""
    return {
        "heads": {u.path: _num_heads(model.get_submodule(u.path)) for u in attention_units(model)},
        "ffn": {u.up: _out_major(model.get_submodule(u.up)).shape[0] for u in ffn_units(model)},
    }


def apply_structure(model: nn.Module, structure: dict[str, dict[str, int]]) -> None:
    """Give a freshly built model the shapes recorded by ``describe_structure`` (weights loaded after)."""
    for unit in attention_units(model):
        heads = structure["heads"][unit.path]
        if heads != _num_heads(model.get_submodule(unit.path)):
            keep_heads(model, unit, list(range(heads)))
    for unit in ffn_units(model):
        width = structure["ffn"][unit.up]
        if width != _out_major(model.get_submodule(unit.up)).shape[0]:
            keep_neurons(model, unit, list(range(width)))


def load_structured_export(out_dir: Path, manifest: dict[str, Any]) -> nn.Module:
    """Loader named in the manifest: config (with fewer layers) + per-module shapes + weights."""
    return load_sparse_export(out_dir, manifest, reshape=lambda model: apply_structure(model, manifest["structure"]))


# ---------------------------------------------------------------- importance
def _magnitude_scores(model: nn.Module, attn: list[AttentionUnit], ffn: list[FfnUnit]):
    head_scores, neuron_scores = [], []
    with torch.no_grad():
        for unit in attn:
            module = model.get_submodule(unit.path)
            heads, head_dim = _num_heads(module), _head_dim(module)
            o = _out_major(model.get_submodule(unit.o)).abs().t()  # (in = heads*dim, out)
            per_row = o.sum(1)
            if unit.fused_qkv:
                qkv = _out_major(model.get_submodule(unit.q)).abs().sum(1).view(3, heads * head_dim).sum(0)
            else:
                qkv = sum(_out_major(model.get_submodule(p)).abs().sum(1) for p in (unit.q, unit.k, unit.v))
            head_scores.append((per_row + qkv).view(heads, head_dim).sum(1))
        for unit in ffn:
            up = _out_major(model.get_submodule(unit.up)).abs().sum(1)
            down = _out_major(model.get_submodule(unit.down)).abs().sum(0)
            neuron_scores.append(up + down)
    return head_scores, neuron_scores


def _split_examples(batch: dict) -> list[dict]:
    """The batch as single-example batches (every tensor has the batch dimension first)."""
    size = next(v for v in batch.values() if torch.is_tensor(v)).shape[0]
    return [{key: value[i:i + 1] if torch.is_tensor(value) else value for key, value in batch.items()}
            for i in range(size)]


def _gradient_scores(model: nn.Module, attn: list[AttentionUnit], ffn: list[FfnUnit], batches: Iterable[dict]):
    """Michel et al. 2019 head importance ``I_h = E_x |dL(x)/d xi_h|``.

    A gate ``xi`` (all ones, so the forward is unchanged) multiplies every head's output where it
    enters the output projection, and every FFN neuron where it enters the down projection. For
    each *example* ``x`` (the paper's expectation is over examples, so every example of a batch
    gets its own forward/backward), ``dL(x)/d xi_h`` sums over the head's dimensions and the
    positions *before* the absolute value is taken; the scores are the mean over the examples of
    ``importance_batches`` batches. Ours: the same per-neuron gate for FFN neurons (Michel et al.
    prune heads only), and Michel et al.'s per-layer normalisation of the scores is not needed
    because heads are ranked within each attention module.
    """
    device = model_device(model)
    modules = [model.get_submodule(u.o) for u in attn] + [model.get_submodule(u.down) for u in ffn]
    units = [_num_heads(model.get_submodule(u.path)) for u in attn]
    units += [_out_major(model.get_submodule(u.down)).shape[1] for u in ffn]
    widths = [_out_major(module).shape[1] for module in modules]
    gates = [torch.ones(n, device=device, requires_grad=True) for n in units]

    def gate_hook(index: int):
        repeat = widths[index] // units[index]  # head_dim for heads, 1 for neurons

        def hook(_module, args):
            return (args[0] * gates[index].repeat_interleave(repeat),) + tuple(args[1:])

        return hook

    handles = [module.register_forward_pre_hook(gate_hook(i)) for i, module in enumerate(modules)]
    totals = [torch.zeros(n, device=device) for n in units]
    was_training = model.training
    model.eval()  # no dropout: the scores describe the model as it will be used
    seen = 0
    try:
        for batch in batches:
            batch = {key: value.to(device) if torch.is_tensor(value) else value for key, value in batch.items()}
            for example in _split_examples(batch):
                loss = model(**example).loss
                grads = torch.autograd.grad(loss, gates, allow_unused=True)
                for total, grad in zip(totals, grads):
                    if grad is not None:
                        total += grad.abs()
                seen += 1
    finally:
        for handle in handles:
            handle.remove()
        model.train(was_training)
    if seen == 0:
        raise ConfigError("prune_structured with importance=gradient got no batches from task.train_dataloader().")
    scores = [total / seen for total in totals]
    return scores[: len(attn)], scores[len(attn):]


def _top(scores: torch.Tensor, sparsity: float) -> list[int]:
    """Indices to keep: all but the round(sparsity * n) least important, at least one."""
    n = scores.numel()
    keep = max(1, n - round(sparsity * n))
    return sorted(torch.topk(scores.float(), keep).indices.tolist())


# ---------------------------------------------------------------- the method
@dataclass
class StructuredPruning(Method):
    """Remove attention heads, FFN neurons and/or whole layers; optionally fine-tune to recover.

    Attributes:
        head_sparsity: fraction of heads removed in every attention module, in [0, 1) (at least
            one head per module is kept).
        ffn_sparsity: fraction of FFN inner neurons removed in every layer, in [0, 1).
        importance: ``magnitude`` (weight L1) or ``gradient`` (Michel et al. 2019, needs task data).
        importance_batches: task batches used by ``importance=gradient``.
        drop_layers: ``none``; ``keep_every_k`` keeps layers 0, k, 2k, ...; ``top`` removes the top
            layers (keeps the first ``keep_layers``); ``bottom`` removes the bottom layers (keeps the
            last ``keep_layers``). BART applies it to encoder and decoder alike.
        keep_layers: layers kept per stack by ``top`` / ``bottom``.
        k: stride of ``keep_every_k``.
        max_steps: recovery fine-tuning steps after pruning (0 = none).
        lr: learning rate of the recovery fine-tuning.
    """

    name: str = "prune_structured"
    head_sparsity: float = 0.5
    ffn_sparsity: float = 0.5
    importance: str = "magnitude"
    importance_batches: int = 8
    drop_layers: str = "none"
    keep_layers: int | None = None
    k: int = 2
    max_steps: int = 0
    lr: float = 5e-5

    def __post_init__(self) -> None:
        for field_name in ("head_sparsity", "ffn_sparsity"):
            if not 0.0 <= float(getattr(self, field_name)) < 1.0:
                raise ConfigError(f"prune_structured.{field_name} must be in [0, 1), got {getattr(self, field_name)}.")
        if self.importance not in IMPORTANCES:
            raise ConfigError(f"prune_structured.importance must be one of {', '.join(IMPORTANCES)}, got {self.importance!r}.")
        if self.drop_layers not in LAYER_DROPS:
            raise ConfigError(f"prune_structured.drop_layers must be one of {', '.join(LAYER_DROPS)}, got {self.drop_layers!r}.")
        if self.drop_layers == "keep_every_k" and self.k < 2:
            raise ConfigError(f"prune_structured.k must be >= 2 with drop_layers=keep_every_k, got {self.k}.")
        if self.drop_layers in ("top", "bottom") and (self.keep_layers is None or self.keep_layers < 1):
            raise ConfigError(f"prune_structured with drop_layers={self.drop_layers} needs keep_layers >= 1, got {self.keep_layers}.")
        if self.importance_batches < 1:
            raise ConfigError(f"prune_structured.importance_batches must be >= 1, got {self.importance_batches}.")
        if self.max_steps < 0 or self.lr <= 0:
            raise ConfigError(f"prune_structured needs max_steps >= 0 and lr > 0, got {self.max_steps} and {self.lr}.")
        if self.head_sparsity == 0 and self.ffn_sparsity == 0 and self.drop_layers == "none":
            raise ConfigError("prune_structured has nothing to remove; set head_sparsity, ffn_sparsity or drop_layers.")

    def check(self, ctx: MethodContext) -> None:
        super().check(ctx)
        needs_data = self.importance == "gradient" and (self.head_sparsity > 0 or self.ffn_sparsity > 0)
        if needs_data and not hasattr(ctx.task, "train_dataloader"):
            raise ConfigError("prune_structured with importance=gradient needs a task with training data; use importance=magnitude.")

    def layers_to_keep(self, num_layers: int) -> list[int]:
        """Indices of the layers kept in a stack of ``num_layers``."""
        if self.drop_layers == "none":
            return list(range(num_layers))
        if self.drop_layers == "keep_every_k":
            return list(range(0, num_layers, self.k))
        if self.keep_layers > num_layers:
            raise ConfigError(f"prune_structured.keep_layers={self.keep_layers} exceeds the model's {num_layers} layers.")
        if self.drop_layers == "top":
            return list(range(self.keep_layers))
        return list(range(num_layers - self.keep_layers, num_layers))

    def prepare(self, model: nn.Module, ctx: MethodContext) -> nn.Module:
        # Layers first: importance is then measured on the network that will remain.
        for stack in layer_stacks(model):
            num_layers = len(model.get_submodule(stack.module_path))
            keep = self.layers_to_keep(num_layers)
            if len(keep) < num_layers:
                keep_layers_of(model, stack.module_path, stack.layers_attr, keep)
        if self.head_sparsity == 0 and self.ffn_sparsity == 0:
            return model
        attn, ffn = attention_units(model), ffn_units(model)
        if self.importance == "gradient":
            batches = islice(iter(ctx.task.train_dataloader()), self.importance_batches)
            head_scores, neuron_scores = _gradient_scores(model, attn, ffn, batches)
        else:
            head_scores, neuron_scores = _magnitude_scores(model, attn, ffn)
        if self.head_sparsity > 0:
            for unit, scores in zip(attn, head_scores):
                keep_heads(model, unit, _top(scores, self.head_sparsity))
        if self.ffn_sparsity > 0:
            for unit, scores in zip(ffn, neuron_scores):
                keep_neurons(model, unit, _top(scores, self.ffn_sparsity))
        return model

    def export(self, model: nn.Module, out_dir: Path, ctx: MethodContext) -> dict[str, Any]:
        return save_sparse_export(
            model, out_dir, method=self.name,
            loader="compbench.methods.pruning.structured:load_structured_export",
            structure=describe_structure(model),
        )
