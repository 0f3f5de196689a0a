"""Dynamic int8 PTQ: every Linear (GPT-2 Conv1D included) on int8 kernels, exact export reloads."""

import copy

import pytest
import torch
from torch import nn
from transformers.pytorch_utils import Conv1D

from compbench.errors import ConfigError
from compbench.methods.base import MethodContext
from compbench.methods.export import load_export
from compbench.methods.ptq_dynamic_int8 import DynamicInt8PTQ
from method_harness import run_steps, tiny_batch, tiny_model

FAMILIES = ["encoder", "decoder", "encoder_decoder"]
DYNAMIC_LINEAR = torch.ao.nn.quantized.dynamic.Linear


def _finalize(method, family):
    model = tiny_model(family)
    final, _ = run_steps(method, copy.deepcopy(model), [], family=family)
    return model, final


@pytest.mark.parametrize("family", FAMILIES)
def test_all_linears_run_int8_kernels(family):
    model, final = _finalize(DynamicInt8PTQ(), family)
    assert type(final) is type(model)
    assert not any(type(m) in (nn.Linear, Conv1D) for m in final.modules())
    assert sum(isinstance(m, DYNAMIC_LINEAR) for m in final.modules()) > 0
    batch = tiny_batch(family)
    with torch.no_grad():
        diff = (final(**batch).logits - model(**batch).logits).abs().max()
    assert 0 < diff < 0.1  # genuinely quantized, still close


@pytest.mark.parametrize("backend", ["torch_ao", "torchao"])
@pytest.mark.parametrize("family", FAMILIES)
def test_export_reload_matches(tmp_path, backend, family):
    method = DynamicInt8PTQ(backend=backend)
    _, final = _finalize(method, family)
    manifest = method.export(final, tmp_path, None)
    assert manifest["backend_ran"] == backend
    reloaded = load_export(tmp_path)
    batch = tiny_batch(family)
    with torch.no_grad():
        # Same int8 codes and scales on the same kernels: documented tolerance 1e-5.
        torch.testing.assert_close(reloaded(**batch).logits, final(**batch).logits, rtol=0, atol=1e-5)


def test_export_is_int8_sized(tmp_path):
    model, final = _finalize(DynamicInt8PTQ(), "encoder")
    method = DynamicInt8PTQ()
    manifest = method.export(final, tmp_path / "q", None)
    model.save_pretrained(tmp_path / "fp32")
    fp32 = (tmp_path / "fp32" / "model.safetensors").stat().st_size
    assert manifest["size_bytes"] < 0.5 * fp32


def test_auto_backend_is_recorded():
    params = DynamicInt8PTQ().row_params()
    assert params == {"backend": "auto", "backend_ran": "torch_ao"}


def test_bad_backend_and_gpu_device_are_refused():
    with pytest.raises(ConfigError, match="backend"):
        DynamicInt8PTQ(backend="fbgemm")
    with pytest.raises(ConfigError, match="CPU kernels"):
        DynamicInt8PTQ().check(MethodContext(family="decoder", device=torch.device("cuda")))
