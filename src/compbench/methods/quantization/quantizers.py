"""Shared quantization primitives: the STE fake-quantizers and their registry.

The modules that apply them (``QuantLinear``, ``QuantEmbedding``, ``quantize_modules``) are in
``quantized_modules.py``; model surgery (GPT-2's ``Conv1D`` -> ``nn.Linear``) in
``compbench.models.architecture``.

Every quantizer maps a tensor to ``(codes - zero) * step`` with integer ``codes`` in
``[qmin, qmax]``; gradients pass through ``round`` with a straight-through estimator (STE).
Statistics are taken over a *grouped view* of the tensor, ``(channels, groups, group_len)``:

* ``group_size=g``: one step per ``g`` consecutive input features of each output row;
* ``per_channel=True`` (no group): one step per row (output channel / embedding row);
* ``per_channel=False``: one step for the whole tensor (how activations are quantized).

torch.ao / torchao provide observers and fake-quant modules, but not learned-clip (PACT) or
learned-step (LSQ) quantizers with per-group scales that we can train and then export as
packed 2/3-bit codes, so the quantizers are written here; ``minmax`` follows torch.ao's
symmetric observer convention (``step = absmax / ((qmax - qmin) / 2)``).

A new quantizer subclasses :class:`Quantizer`, overrides ``scale_and_zero`` (and ``init_from`` /
``clip_grouped`` if it learns anything) and registers itself with ``@register_quantizer(name)``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable

import torch
from torch import Tensor, nn

from compbench.errors import ConfigError

#: Bit-widths the packer and the methods support for weights and embeddings.
SUPPORTED_BITS = (2, 3, 4, 8)
#: Activation bit-widths; 16 and 32 mean "activations are not quantized".
SUPPORTED_A_BITS = (4, 8, 16, 32)
#: Scales are stored in fp16 (as in GPTQ/AWQ checkpoints); fp16's smallest normal keeps an
#: all-zero channel (e.g. a pruned row) from getting a zero step.
_MIN_STEP = torch.finfo(torch.float16).tiny

QUANTIZERS: dict[str, type["Quantizer"]] = {}


def register_quantizer(name: str) -> Callable[[type["Quantizer"]], type["Quantizer"]]:
    """Class decorator adding a quantizer to ``QUANTIZERS`` under ``name``."""

    def wrap(cls: type[Quantizer]) -> type[Quantizer]:
        if name in QUANTIZERS and QUANTIZERS[name] is not cls:
            raise ValueError(f"quantizer {name!r} is already registered as {QUANTIZERS[name].__name__}")
        QUANTIZERS[name] = cls
        cls.registry_name = name
        return cls

    return wrap


def get_quantizer(name: str) -> type["Quantizer"]:
    """Look a quantizer class up by name, refusing unknown names with one sentence."""
    if name not in QUANTIZERS:
        raise ConfigError(f"unknown quantizer {name!r}; choose one of: {', '.join(sorted(QUANTIZERS))}.")
    return QUANTIZERS[name]


def check_bits(name: str, value: Any, allowed: tuple[int, ...], optional: bool = False) -> None:
    """Refuse a bit-width outside ``allowed`` with one sentence."""
    if optional and value is None:
        return
    if isinstance(value, bool) or value not in allowed:
        extra = " or null" if optional else ""
        raise ConfigError(f"{name}={value!r} is not supported; use one of {', '.join(map(str, allowed))}{extra}.")


def check_group_size(group_size: Any) -> None:
    """Refuse a group size that is not a positive integer or null."""
    if group_size is not None and (isinstance(group_size, bool) or not isinstance(group_size, int) or group_size < 1):
        raise ConfigError(f"group_size={group_size!r} must be a positive integer (e.g. 128) or null for per-channel.")


def round_ste(x: Tensor) -> Tensor:
    """``round(x)`` in the forward pass, identity gradient in the backward pass."""
    return x + (torch.round(x) - x).detach()


def scale_grad(x: Tensor, factor: float) -> Tensor:
    """``x`` in the forward pass, gradient multiplied by ``factor`` (LSQ's gradient scaling)."""
    return x * factor + (x - x * factor).detach()


@dataclass
class QuantizedWeight:
    """Integer codes of one weight tensor and what is needed to dequantize them.

    Attributes:
        codes: unsigned codes ``q - qmin + zero_offset`` in ``[0, 2**bits - 1]`` (uint8), shape
            of the grouped view ``(channels, groups, group_len)``.
        scale: fp16 step per (channel, group), shape ``(channels, groups, 1)`` (or ``(1, 1, 1)``).
        zero: uint8 zero point of the unsigned codes, same shape as ``scale``.
        bits: bit-width of the codes.
        shape: shape of the original weight.
    """

    codes: Tensor
    scale: Tensor
    zero: Tensor
    bits: int
    shape: tuple[int, ...]

    def dequantize(self) -> Tensor:
        """The fp32 weight these codes stand for (bit-identical wherever it is computed)."""
        values = (self.codes.float() - self.zero.float()) * self.scale.float()
        return values.reshape(self.shape)


class Quantizer(nn.Module):
    """Fake-quantizer with a straight-through estimator (base class; ``minmax`` behaviour).

    Args:
        bits: bit-width of the integer codes.
        per_channel: one step per row of a 2-D weight (else one per tensor).
        group_size: one step per ``group_size`` consecutive elements of each row (overrides
            ``per_channel``); the row length must be divisible by it.
        symmetric: signed codes ``[-2**(b-1), 2**(b-1) - 1]`` with zero point 0; otherwise
            unsigned codes ``[0, 2**b - 1]`` with a per-group zero point.
    """

    registry_name = "base"
    #: Whether ``symmetric=False`` is supported by this quantizer.
    supports_asymmetric = True
    #: Fake-quantize with the fp16-rounded step that ``quantize`` stores, so that the frozen
    #: weights equal the last training-time forward exactly. On for ``minmax``; off for the
    #: learned quantizers, whose recorded training trajectories use fp32 steps (their frozen
    #: weights then differ from the last fake-quant forward by the fp16 rounding of the step,
    #: ~1e-3 relative; the export still equals the finalized model bit for bit).
    train_with_fp16_steps = False

    def __init__(self, bits: int, *, per_channel: bool = True, group_size: int | None = None, symmetric: bool = True):
        super().__init__()
        if not isinstance(bits, int) or not 2 <= bits <= 16:
            raise ConfigError(f"quantizer bit-width must be an integer in 2..16, got {bits!r}.")
        if group_size is not None and group_size < 1:
            raise ConfigError(f"group_size must be a positive integer or null, got {group_size!r}.")
        if not symmetric and not self.supports_asymmetric:
            raise ConfigError(f"the {self.registry_name} quantizer is symmetric only; set symmetric=true.")
        self.bits = bits
        self.per_channel = per_channel
        self.group_size = group_size
        self.symmetric = symmetric
        if symmetric:
            self.qmin, self.qmax = -(2 ** (bits - 1)), 2 ** (bits - 1) - 1
        else:
            self.qmin, self.qmax = 0, 2**bits - 1
        #: Half the number of levels: the symmetric range ``absmax`` maps onto.
        self.half_levels = (self.qmax - self.qmin) / 2

    def extra_repr(self) -> str:
        return f"bits={self.bits}, per_channel={self.per_channel}, group_size={self.group_size}, symmetric={self.symmetric}"

    # ------------------------------------------------------------------ grouping
    def grouped(self, x: Tensor) -> Tensor:
        """View ``x`` as ``(channels, groups, group_len)``; statistics reduce the last dim."""
        if self.group_size is not None:
            if x.dim() < 2 or x.shape[-1] % self.group_size:
                raise ConfigError(
                    f"group_size={self.group_size} does not divide the row length {x.shape[-1]} of a "
                    f"{tuple(x.shape)} tensor; pick a divisor or group_size=null."
                )
            return x.reshape(x.shape[0], -1, self.group_size)
        if self.per_channel and x.dim() >= 2:
            return x.reshape(x.shape[0], 1, -1)
        return x.reshape(1, 1, -1)

    # ------------------------------------------------------------------ hooks for subclasses
    def init_from(self, x: Tensor) -> None:
        """Initialise learned parameters (clip/step) from data ``x`` (a weight or a batch)."""
        self.init_grouped(self.grouped(x.detach().float()))

    def init_grouped(self, xg: Tensor) -> None:
        """Initialise learned parameters from the grouped view (``minmax`` learns nothing)."""

    def clip_grouped(self, xg: Tensor) -> Tensor:
        """Clip the grouped tensor before quantization (PACT learns this clip)."""
        return xg

    def scale_and_zero(self, xg: Tensor) -> tuple[Tensor, Tensor]:
        """Step and zero point of each group of ``xg``, shaped ``(C, G, 1)`` (minmax)."""
        if self.symmetric:
            absmax = xg.detach().abs().amax(dim=-1, keepdim=True)
            step = (absmax / self.half_levels).clamp_min(_MIN_STEP)
            return step, torch.zeros_like(step)
        low = xg.detach().amin(dim=-1, keepdim=True).clamp_max(0)
        high = xg.detach().amax(dim=-1, keepdim=True).clamp_min(0)
        step = ((high - low) / (self.qmax - self.qmin)).clamp_min(_MIN_STEP)
        zero = torch.round(self.qmin - low / step)
        return step, zero

    # ------------------------------------------------------------------ public API
    def forward(self, x: Tensor) -> Tensor:
        """Fake-quantized ``x``: same shape and dtype, at most ``2**bits`` values per group."""
        xg = self.clip_grouped(self.grouped(x))
        step, zero = self.scale_and_zero(xg)
        if self.train_with_fp16_steps:
            # Steps are stored in fp16; using the fp16 value here too (STE through the cast)
            # makes the frozen/exported weight exactly the one trained against.
            step = step + (step.to(torch.float16).clamp_min(_MIN_STEP).to(step.dtype) - step).detach()
        codes = torch.clamp(round_ste(xg / step) + zero, self.qmin, self.qmax)
        return ((codes - zero) * step).reshape(x.shape)

    @torch.no_grad()
    def quantize(self, x: Tensor) -> QuantizedWeight:
        """Integer codes of ``x`` with fp16 steps (what ``freeze`` keeps and ``packing`` stores).

        Codes are computed against the fp16-rounded step, so ``QuantizedWeight.dequantize()`` is
        the one definition of the frozen weight, identical in memory and after export.
        """
        xg = self.clip_grouped(self.grouped(x.detach().float()))
        step, zero = self.scale_and_zero(xg)
        step16 = step.to(torch.float16).clamp_min(_MIN_STEP)
        codes = torch.clamp(torch.round(xg / step16.to(xg.dtype)) + zero, self.qmin, self.qmax)
        # Store unsigned codes in [0, 2**bits - 1]; the zero point absorbs the signed offset.
        return QuantizedWeight(
            codes=(codes - self.qmin).to(torch.uint8),
            scale=step16,
            zero=(zero - self.qmin).to(torch.uint8),
            bits=self.bits,
            shape=tuple(x.shape),
        )


@register_quantizer("minmax")
class MinMaxQuantizer(Quantizer):
    """Round-to-nearest on a grid set by each group's range (nothing learned)."""

    train_with_fp16_steps = True


class _LearnedQuantizer(Quantizer):
    """Shared plumbing of quantizers with one learned parameter per (channel, group)."""

    supports_asymmetric = False
    param_name = "value"

    def __init__(self, bits: int, **kwargs):
        super().__init__(bits, **kwargs)
        # Shape follows the data in ``init_from``; until then a scalar placeholder.
        self.register_parameter(self.param_name, nn.Parameter(torch.ones(1, 1, 1)))
        self.register_buffer("initialized", torch.zeros((), dtype=torch.bool))

    def _set_learned(self, value: Tensor) -> None:
        current = getattr(self, self.param_name)
        if current.shape == value.shape:
            # In place: an activation quantizer initialises on its first batch, after the
            # optimizer already holds this parameter.
            with torch.no_grad():
                current.copy_(value)
        else:
            setattr(self, self.param_name, nn.Parameter(value.detach().clone().float()))
        self.initialized.fill_(True)

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        # The learned tensor's shape depends on the data it was initialised from; adopt the
        # stored shape so that a fresh quantizer can load an exported one.
        key = prefix + self.param_name
        if key in state_dict and state_dict[key].shape != getattr(self, self.param_name).shape:
            setattr(self, self.param_name, nn.Parameter(torch.empty_like(state_dict[key], dtype=torch.float32)))
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def _ensure_init(self, xg: Tensor) -> None:
        if not bool(self.initialized):
            self.init_grouped(xg.detach())


@register_quantizer("pact")
class PACTQuantizer(_LearnedQuantizer):
    """PACT (Choi et al., 2018): a learned clipping level ``alpha`` with PACT's gradient.

    Forward (the paper's Eq. 1-2, two-sided)::

        y = clip(x, -alpha, alpha);   q = round(y * k / alpha) * alpha / k,   k = 2**(b-1) - 1

    Backward (the paper's Eq. 3, with the STE ``dq/dy = 1``): ``dq/dx = 1`` for ``|x| < alpha``
    and 0 outside; ``dq/dalpha = 1`` where ``x >= alpha``, ``-1`` where ``x <= -alpha`` and **0
    inside the clip** -- alpha learns from the clipped values only (the in-clip rounding term
    that LSQ and QuantGPT's dynamic scaling add is deliberately absent).

    Grid: symmetric, ``2k + 1 = 2**b - 1`` levels ``{-k..k} * alpha / k``, so 2-bit is ternary
    ``{-alpha, 0, alpha}`` (the grid of QuantGPT's own quantizer, Tao et al. 2022, which makes
    ``contrastive_qat dynamic_scaling=false`` differ from dynamic scaling in the gradient only).
    Ours, where Choi et al. are silent or differ: the two-sided clip (the paper clips ReLU
    outputs to ``[0, alpha]``; transformer weights and Linear inputs are signed), the symmetric
    grid for activations too (one code of 2**b unused), ``alpha`` initialised to the absolute
    maximum of each group (the paper initialises activation clips to a constant), and no L2
    penalty on ``alpha`` by default (the paper's is ``qat``'s ``quantizer_weight_decay``).
    """

    param_name = "alpha"

    def __init__(self, bits: int, **kwargs):
        super().__init__(bits, **kwargs)
        self.qmin, self.qmax = -(2 ** (bits - 1) - 1), 2 ** (bits - 1) - 1
        self.half_levels = float(self.qmax)

    def init_grouped(self, xg: Tensor) -> None:
        """``alpha`` = the absolute maximum of each group."""
        self._set_learned(xg.abs().amax(dim=-1, keepdim=True).clamp_min(_MIN_STEP))

    def _alpha(self) -> Tensor:
        return self.alpha.abs().clamp_min(_MIN_STEP)

    def clip_grouped(self, xg: Tensor) -> Tensor:
        self._ensure_init(xg)
        alpha = self._alpha()
        return torch.minimum(torch.maximum(xg, -alpha), alpha)

    def scale_and_zero(self, xg: Tensor) -> tuple[Tensor, Tensor]:
        step = self._alpha() / self.qmax
        return step, torch.zeros_like(step)

    def forward(self, x: Tensor) -> Tensor:
        """Fake-quantized ``x``; the rounding is a pure STE on ``y``, so alpha's gradient comes
        from the clip alone (the base class's ``round_ste(x / step) * step`` would add the
        in-clip term ``round(u) - u`` through the step)."""
        y = self.clip_grouped(self.grouped(x))
        step = self.scale_and_zero(y)[0].detach()
        q = torch.clamp(torch.round(y.detach() / step), self.qmin, self.qmax) * step
        return (y + (q - y).detach()).reshape(x.shape)


@register_quantizer("lsq")
class LSQQuantizer(_LearnedQuantizer):
    """LSQ (Esser et al., 2020): a learned step ``s``, gradient scaled by ``g = 1/sqrt(N * Q_P)``.

    ``q = round(clip(x / s, -Q_N, Q_P)) * s`` with ``Q_N = 2**(b-1)``, ``Q_P = 2**(b-1) - 1``
    (the paper's signed range). The paper's Eq. 3, which autograd reproduces through the STE:
    ``dq/ds = round(x/s) - x/s`` inside the range, ``-Q_N`` below it and ``Q_P`` above it, times
    ``g``. ``N`` is the number of elements sharing a step (the group, row or tensor: the paper's
    ``N_W`` for a per-tensor weight step; for activations, the elements of the batch tensor).
    """

    param_name = "step"

    def init_grouped(self, xg: Tensor) -> None:
        """``step = 2 * mean|x| / sqrt(qmax)`` per group (the paper's initialisation)."""
        init = 2 * xg.abs().mean(dim=-1, keepdim=True) / math.sqrt(self.qmax)
        self._set_learned(init.clamp_min(_MIN_STEP))

    def scale_and_zero(self, xg: Tensor) -> tuple[Tensor, Tensor]:
        self._ensure_init(xg)
        grad_factor = 1.0 / math.sqrt(xg.shape[-1] * self.qmax)
        step = scale_grad(self.step, grad_factor).abs().clamp_min(_MIN_STEP)
        return step, torch.zeros_like(step)

    def forward(self, x: Tensor) -> Tensor:
        """``round(clip(x / s, -Q_N, Q_P)) * s``: clipping *before* rounding, as in the paper, so
        that ``x / s`` in the half step beyond ``Q_P`` already counts as clipped (gradient
        ``Q_P`` for ``s`` and 0 for ``x``)."""
        xg = self.grouped(x)
        step, _ = self.scale_and_zero(xg)
        codes = round_ste(torch.clamp(xg / step, self.qmin, self.qmax))
        return (codes * step).reshape(x.shape)


# ---------------------------------------------------------------------------- dynamic scaling
#: Candidate clip factors (alpha / mean|w|) tried when initialising gamma; 2-bit optima of
#: Gaussian/Laplacian weights lie near 1.2-2 (TWN's threshold 0.7 mean|w| gives alpha ~= 1.4
#: mean|w|), 8-bit optima near the max, so the grid spans up to max|w| / mean|w|.
_GAMMA_GRID = 96
#: Elements used for the gamma search: a strided subsample keeps prepare() fast on large
#: embeddings (GPT-2's wte has 38.6M weights) without changing the optimum noticeably.
_GAMMA_INIT_MAX_ELEMENTS = 1 << 20


class _DynamicScalingFn(torch.autograd.Function):
    """``q = round(clip(w, -a, a) k / a) a / k`` with ``a = |gamma| * mean|w|`` and exactly the
    gradients derived in :class:`DynamicScalingQuantizer` (what autograd through clip, STE round
    and clamp gives), computed in a few passes: autograd kept ~15 weight-sized temporaries, which
    on GPT-2's 38.6M-element embedding made a step at batch 1 x 512 1.6x slower than PACT's."""

    @staticmethod
    def forward(ctx, xg: Tensor, gamma: Tensor, mean_abs: Tensor, k: float) -> Tensor:
        raw_alpha = gamma.detach().abs() * mean_abs
        alpha = raw_alpha.clamp_min(_MIN_STEP)
        step = alpha / k
        q = torch.clamp(xg.detach(), -alpha, alpha).div_(step).round_().clamp_(-k, k).mul_(step)
        ctx.save_for_backward(xg.detach(), gamma.detach(), mean_abs, alpha, raw_alpha)
        ctx.k = k
        return q

    @staticmethod
    def backward(ctx, grad: Tensor):
        xg, gamma, mean_abs, alpha, raw_alpha = ctx.saved_tensors
        k = ctx.k
        inside = xg.abs() < alpha
        grad_x = grad * inside if ctx.needs_input_grad[0] else None
        grad_gamma = None
        if ctx.needs_input_grad[1]:
            v = xg / (alpha / k)
            # dq/dalpha: (round(v) - v) / k inside the clip, sign(w) outside.
            dq_dalpha = torch.where(inside, (torch.round(v) - v).div_(k), torch.sign(xg))
            d_alpha = (grad * dq_dalpha).sum(dim=-1, keepdim=True) * (raw_alpha > _MIN_STEP)
            grad_gamma = (d_alpha * mean_abs).sum().mul(torch.sign(gamma)).reshape(gamma.shape)
        return grad_x, grad_gamma, None, None


@register_quantizer("dynamic_scaling")
class DynamicScalingQuantizer(_LearnedQuantizer):
    """Module-wise dynamic scaling (the paper's second component): clip ``alpha = gamma * mean(|w|)``.

    ``gamma`` is one learned scalar per quantized module, so the clip follows the weights'
    changing scale during training (``mean|w|`` is recomputed every forward) while ``gamma``
    adapts it to the module. With ``per_channel``/``group_size`` the mean is taken per row/group
    and ``gamma`` stays shared by the module. Levels are the paper's symmetric ones,
    ``q = alpha * round(k * clip(w, -alpha, alpha) / alpha) / k`` with ``k = 2**(b-1) - 1``
    (2-bit = ternary ``{-alpha, 0, alpha}``, the paper's setting), i.e. ``step = alpha / k``.

    Gradient (what autograd computes here, and the paper's): with ``u = w / alpha``,
    ``dq/dalpha = round(k u) / k - u`` for ``|w| < alpha`` (weights *inside* the clip, the
    quantization-error term PACT lacks) and ``sign(w)`` for ``|w| >= alpha`` (weights outside),
    so ``dL/dgamma = mean(|w|) * sum_i dL/dq_i * dq_i/dalpha``. ``mean|w|`` is detached: the
    gradient w.r.t. ``w`` is the plain STE (1 inside the clip, 0 outside), as in the paper.

    ``gamma`` is initialised by a grid search minimising ``||q(w) - w||^2`` (the clip that
    best represents the pretrained weights at this bit-width), so training starts from a
    sensible clip rather than the max, which at 2 bits would round most weights to zero.
    """

    param_name = "gamma"

    def __init__(self, bits: int, **kwargs):
        super().__init__(bits, **kwargs)
        # Symmetric levels [-k, k] (the base class's signed range has one extra negative code).
        self.qmin, self.qmax = -(2 ** (bits - 1) - 1), 2 ** (bits - 1) - 1
        self.half_levels = float(self.qmax)
        self._alpha: Tensor | None = None

    def _alpha_of(self, xg: Tensor) -> Tensor:
        mean_abs = xg.detach().abs().mean(dim=-1, keepdim=True).clamp_min(_MIN_STEP)
        return (self.gamma.abs() * mean_abs).clamp_min(_MIN_STEP)

    @torch.no_grad()
    def init_grouped(self, xg: Tensor) -> None:
        """``gamma`` = the MSE-optimal clip factor over a grid (see class docstring)."""
        sample = xg.float().reshape(-1, 1, xg.shape[-1])  # (rows, 1, group_len)
        stride = math.ceil(sample.numel() / _GAMMA_INIT_MAX_ELEMENTS)
        if stride > 1:  # keep whole rows when there are many, else every stride-th element
            sample = sample[::stride] if sample.shape[0] >= stride else sample[..., ::stride]
        mean_abs = sample.abs().mean(dim=-1, keepdim=True).clamp_min(_MIN_STEP)
        top = float((sample.abs() / mean_abs).amax())
        best_gamma, best_err = top, float("inf")
        for gamma in torch.linspace(top / _GAMMA_GRID, top, _GAMMA_GRID).tolist():
            alpha = gamma * mean_abs
            step = alpha / self.qmax
            quantized = torch.clamp(torch.round(sample.clamp(-alpha, alpha) / step), self.qmin, self.qmax) * step
            err = float((quantized - sample).pow(2).sum())
            if err < best_err:
                best_gamma, best_err = gamma, err
        self._set_learned(torch.full((1, 1, 1), best_gamma))

    def forward(self, x: Tensor) -> Tensor:
        """Fake-quantized ``x`` through :class:`_DynamicScalingFn` (same values and gradients as
        the base class's clip / STE-round path, fewer weight-sized temporaries)."""
        xg = self.grouped(x)
        self._ensure_init(xg)
        mean_abs = (torch.linalg.vector_norm(xg.detach(), ord=1, dim=-1, keepdim=True) / xg.shape[-1]).clamp_min(
            _MIN_STEP)
        return _DynamicScalingFn.apply(xg, self.gamma, mean_abs, float(self.qmax)).reshape(x.shape)

    def clip_grouped(self, xg: Tensor) -> Tensor:
        self._ensure_init(xg)
        # The base class calls clip_grouped then scale_and_zero on the clipped tensor; alpha
        # needs mean|w| of the *unclipped* weights, so it is computed here and kept for the step.
        self._alpha = self._alpha_of(xg)
        return torch.minimum(torch.maximum(xg, -self._alpha), self._alpha)

    def scale_and_zero(self, xg: Tensor) -> tuple[Tensor, Tensor]:
        alpha = self._alpha if self._alpha is not None else self._alpha_of(xg)
        self._alpha = None
        step = alpha / self.qmax
        return step, torch.zeros_like(step)
