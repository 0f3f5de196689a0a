"""Quantizer primitives: level counts, learned-parameter gradients, Conv1D conversion, wrapping."""


import math

import pytest
import torch
from torch import nn
from transformers.pytorch_utils import Conv1D

from compbench.models.families import FAMILIES
from compbench.errors import ConfigError
from compbench.methods.quantization.quantized_modules import (
    QuantEmbedding,
    QuantLinear,
    freeze_quantized,
    quantize_modules,
)
from compbench.methods.quantization.quantizers import QUANTIZERS, Quantizer, get_quantizer, register_quantizer
from compbench.models.architecture import conv1d_to_linear
from method_harness import tiny_batch, tiny_model



def _weight(rows=6, cols=64, seed=0):
    return torch.randn(rows, cols, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("name", ["minmax", "pact", "lsq"])
@pytest.mark.parametrize("bits", [2, 3, 4, 8])
@pytest.mark.parametrize("group_size", [None, 16])
def test_at_most_two_to_the_bits_values_per_group(name, bits, group_size):
    w = _weight()
    q = get_quantizer(name)(bits, group_size=group_size)
    q.init_from(w)
    out = q(w).detach()
    assert out.shape == w.shape
    groups = out.reshape(w.shape[0], -1, group_size or w.shape[1])
    counts = [len(torch.unique(g)) for g in groups.reshape(-1, groups.shape[-1])]
    assert max(counts) <= 2**bits
    if bits == 8:  # 256 levels over 16-64 gaussian values: nearly all distinct, error small
        assert (out - w).abs().max() < 0.05 * w.abs().max()


def test_asymmetric_minmax_codes_cover_range():
    w = _weight() + 1.0  # skewed range (zero stays representable): both ends of the grid are used
    q = get_quantizer("minmax")(4, symmetric=False)
    qw = q.quantize(w)
    assert int(qw.codes.max()) == 15 and int(qw.codes.min()) == 0
    assert torch.equal(qw.dequantize(), q(w))  # the exported weight is the trained fake-quant one


@pytest.mark.parametrize("name", ["pact", "lsq"])
@pytest.mark.parametrize("per_channel", [True, False])
def test_learned_parameters_get_finite_nonzero_gradients(name, per_channel):
    w = _weight().requires_grad_(True)
    q = get_quantizer(name)(2, per_channel=per_channel)
    q.init_from(w)
    (q(w) * torch.randn_like(w)).sum().backward()
    (learned,) = list(q.parameters())
    assert learned.grad is not None and torch.isfinite(learned.grad).all()
    assert (learned.grad != 0).any()
    assert w.grad is not None and (w.grad != 0).any()  # STE passes gradient to the weight


def test_activation_quantizer_initialises_in_place_on_first_batch():
    q = get_quantizer("lsq")(8, per_channel=False)
    param_before = q.step
    q(torch.randn(4, 10) * 5)
    assert q.step is param_before and bool(q.initialized)  # the optimizer's tensor is kept
    assert float(q.step.detach()) != 1.0


def test_learned_quantizers_refuse_asymmetric():
    with pytest.raises(ConfigError, match="symmetric"):
        get_quantizer("pact")(4, symmetric=False)


def test_unknown_quantizer_and_bad_group_size_are_refused():
    with pytest.raises(ConfigError, match="unknown quantizer"):
        get_quantizer("nope")
    with pytest.raises(ConfigError, match="group_size"):
        quantize_modules(tiny_model("decoder"), w_bits=4, group_size=48)


def test_register_quantizer_adds_a_name():
    @register_quantizer("test_identity_grid")
    class Half(Quantizer):
        pass

    assert QUANTIZERS["test_identity_grid"] is Half
    assert get_quantizer("test_identity_grid") is Half
    del QUANTIZERS["test_identity_grid"]


def test_conv1d_to_linear_is_exact():
    conv = Conv1D(24, 16)
    torch.nn.init.normal_(conv.weight)
    torch.nn.init.normal_(conv.bias)
    holder = nn.Sequential(conv)
    x = torch.randn(3, 5, 16)
    expected = conv(x)
    conv1d_to_linear(holder)
    assert isinstance(holder[0], nn.Linear)
    assert torch.equal(holder[0].weight, conv.weight.t())
    torch.testing.assert_close(holder[0](x), expected, rtol=0, atol=1e-6)

    model = tiny_model("decoder")
    batch = tiny_batch("decoder")
    with torch.no_grad():
        ref = model(**batch).logits
        conv1d_to_linear(model)
        assert not any(isinstance(m, Conv1D) for m in model.modules())
        torch.testing.assert_close(model(**batch).logits, ref, rtol=0, atol=1e-5)


@pytest.mark.parametrize("family", FAMILIES)
def test_quantize_modules_keeps_class_and_ties(family):
    model = tiny_model(family)
    cls = type(model)
    quantize_modules(model, w_bits=4, e_bits=2, a_bits=8, quantizer="pact")
    assert type(model) is cls
    emb = model.get_input_embeddings()
    assert isinstance(emb, QuantEmbedding)
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    assert linears and all(isinstance(m, QuantLinear) for m in linears)
    assert all(m.act_quantizer is not None for m in linears)
    if family != "encoder":  # tied output head shares the embedding's e_bits quantizer
        head = model.get_output_embeddings()
        assert head.weight is emb.weight and head.weight_quantizer is emb.weight_quantizer
        assert head.weight_quantizer.bits == 2
    out = model(**tiny_batch(family))
    assert torch.isfinite(out.logits).all()


def test_e_bits_none_leaves_tied_embeddings_alone():
    model = tiny_model("decoder")
    wte = model.transformer.wte.weight.detach().clone()
    quantize_modules(model, w_bits=2, e_bits=None)
    assert type(model.transformer.wte) is nn.Embedding and type(model.lm_head) is nn.Linear
    freeze_quantized(model)
    assert torch.equal(model.transformer.wte.weight, wte)


@pytest.mark.parametrize("family", FAMILIES)
def test_freeze_keeps_codes_and_unwraps(family):
    model = tiny_model(family)
    batch = tiny_batch(family)
    quantize_modules(model, w_bits=3, e_bits=4, quantizer="minmax", group_size=16)
    with torch.no_grad():
        fake = model(**batch).logits
    freeze_quantized(model)
    assert not any(isinstance(m, (QuantLinear, QuantEmbedding)) for m in model.modules())
    frozen = [m for m in model.modules() if hasattr(m, "quantized_weight")]
    assert frozen
    for m in frozen:
        assert torch.equal(m.weight.detach(), m.quantized_weight.dequantize())
        assert int(m.quantized_weight.codes.max()) < 2**m.quantized_weight.bits
    with torch.no_grad():
        # Training-time fake quant already uses the fp16 steps that are frozen and exported.
        torch.testing.assert_close(model(**batch).logits, fake, rtol=0, atol=1e-6)


# ---------------------------------------------------------------- the papers' equations, 2/4/8 bits
def _with_outliers(seed=7):
    """Gaussian weights with a few large ones, so that clipped and unclipped elements both exist."""
    w = _weight(rows=4, cols=48, seed=seed)
    w[0, :3] = torch.tensor([4.0, -5.0, 6.0])
    return w


@pytest.mark.parametrize("bits", [2, 4, 8])
@pytest.mark.parametrize("per_channel", [True, False])
def test_pact_forward_and_gradients_follow_choi_et_al(bits, per_channel):
    """y = clip(x, -a, a); q = round(y k / a) a / k (k = 2**(b-1) - 1); dq/dx = 1 inside the clip,
    0 outside; dq/da = +1 where x >= a, -1 where x <= -a, 0 inside (Choi et al. 2018, Eq. 1-3)."""
    x = _with_outliers().requires_grad_(True)
    q = get_quantizer("pact")(bits, per_channel=per_channel)
    q.init_from(x)
    with torch.no_grad():  # a clip below the max so that some elements are clipped
        q.alpha.mul_(0.5)
    alpha = q.alpha.detach().reshape(-1, 1) if per_channel else q.alpha.detach().reshape(())
    k = 2 ** (bits - 1) - 1
    expected = torch.round(torch.clamp(x.detach(), -alpha, alpha) * k / alpha) * alpha / k
    upstream = torch.randn(x.shape, generator=torch.Generator().manual_seed(1))
    out = q(x)
    torch.testing.assert_close(out.detach(), expected, rtol=0, atol=1e-6)
    if bits == 2:  # ternary {-a, 0, a}: -a is reconstructed at -a
        assert set(torch.unique(out.detach() / alpha).tolist()) <= {-1.0, 0.0, 1.0}
    (out * upstream).sum().backward()
    upper, lower = x.detach() >= alpha, x.detach() <= -alpha
    inside = ~(upper | lower)
    torch.testing.assert_close(x.grad, upstream * inside)
    d_alpha = upstream * (upper.float() - lower.float())
    d_alpha = d_alpha.sum(dim=1).reshape(q.alpha.shape) if per_channel else d_alpha.sum().reshape(q.alpha.shape)
    assert upper.any() and lower.any() and inside.any()
    torch.testing.assert_close(q.alpha.grad, d_alpha, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("bits", [2, 4, 8])
def test_pact_alpha_gets_no_gradient_from_unclipped_values(bits):
    x = _weight(seed=3) * 0.1  # all well inside the max-initialised clip
    q = get_quantizer("pact")(bits, per_channel=False)
    q.init_from(x * 10)
    (q(x) * torch.randn_like(x)).sum().backward()
    assert float(q.alpha.grad.abs().sum()) == 0.0


@pytest.mark.parametrize("bits", [2, 4, 8])
@pytest.mark.parametrize("per_channel", [True, False])
def test_lsq_forward_and_gradients_follow_esser_et_al(bits, per_channel):
    """q = round(clip(x/s, -Q_N, Q_P)) s; dq/ds = (round(x/s) - x/s) inside, -Q_N / Q_P outside,
    times g = 1/sqrt(N Q_P); dq/dx = 1 inside, 0 outside (Esser et al. 2020, Eq. 1-4)."""
    x = _with_outliers().requires_grad_(True)
    q = get_quantizer("lsq")(bits, per_channel=per_channel)
    q.init_from(x)
    qn, qp = 2 ** (bits - 1), 2 ** (bits - 1) - 1
    s = q.step.detach().reshape(-1, 1) if per_channel else q.step.detach().reshape(())
    n = x.shape[1] if per_channel else x.numel()
    v = x.detach() / s
    expected = torch.round(torch.clamp(v, -qn, qp)) * s
    upstream = torch.randn(x.shape, generator=torch.Generator().manual_seed(2))
    out = q(x)
    torch.testing.assert_close(out.detach(), expected, rtol=0, atol=1e-6)
    (out * upstream).sum().backward()
    below, above = v <= -qn, v >= qp
    inside = ~(below | above)
    d_step = torch.where(below, torch.full_like(v, -qn), torch.where(above, torch.full_like(v, qp), torch.round(v) - v))
    g = 1.0 / math.sqrt(n * qp)
    d_step = (upstream * d_step * g)
    d_step = d_step.sum(dim=1).reshape(q.step.shape) if per_channel else d_step.sum().reshape(q.step.shape)
    torch.testing.assert_close(q.step.grad, d_step, rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(x.grad, upstream * inside)


@pytest.mark.parametrize("bits", [2, 4, 8])
def test_minmax_forward_is_round_to_nearest_on_the_absmax_grid(bits):
    x = _weight(seed=5)
    q = get_quantizer("minmax")(bits)
    half = (2**bits - 1) / 2
    step = (x.abs().amax(dim=1, keepdim=True) / half).half().float()  # fp16 steps, as exported
    expected = torch.clamp(torch.round(x / step), -(2 ** (bits - 1)), 2 ** (bits - 1) - 1) * step
    torch.testing.assert_close(q(x), expected, rtol=0, atol=1e-6)
    assert list(q.parameters()) == []  # nothing learned, no parameter gradient


@pytest.mark.parametrize("bits", [2, 4, 8])
def test_pact_export_codes_reproduce_the_trained_weight(bits):
    x = _with_outliers()
    q = get_quantizer("pact")(bits)
    q.init_from(x)
    qw = q.quantize(x)
    k = 2 ** (bits - 1) - 1
    assert int(qw.codes.max()) <= 2 * k  # symmetric: 2**b - 1 codes used at most
    alpha = q.alpha.detach().reshape(-1, 1)
    step16 = (alpha / k).half().float()  # exported steps are fp16
    expected = torch.clamp(torch.round(torch.clamp(x, -alpha, alpha) / step16), -k, k) * step16
    torch.testing.assert_close(qw.dequantize(), expected, rtol=0, atol=1e-6)
