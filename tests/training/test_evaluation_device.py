"""Choice of the evaluation device, refused with one sentence when impossible."""

from __future__ import annotations

import pytest
import torch

from compbench.errors import ConfigError
from compbench.methods.none import NoCompression
from compbench.methods.quantization.ptq_llm_int8 import LLMInt8PTQ
from compbench.training.plan import evaluation_device


def test_auto_follows_the_hardware_and_cpu_is_always_possible_for_dense_models():
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert evaluation_device("auto", NoCompression()).type == expected
    assert evaluation_device("cpu", NoCompression()).type == "cpu"


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal on a machine without CUDA")
def test_cuda_without_a_gpu_is_refused_in_one_sentence():
    with pytest.raises(ConfigError, match="no CUDA device is available; use evaluation.device=auto"):
        evaluation_device("cuda", NoCompression())


def test_cuda_only_kernels_cannot_be_evaluated_on_the_cpu():
    with pytest.raises(ConfigError, match="cannot run on the CPU"):
        evaluation_device("cpu", LLMInt8PTQ())


def test_unknown_device_setting_is_refused():
    with pytest.raises(ConfigError, match="not one of auto, cpu, cuda"):
        evaluation_device("tpu", NoCompression())


def test_dynamic_int8_is_cpu_only_so_auto_keeps_it_on_the_cpu(monkeypatch):
    from compbench.methods.quantization.ptq_dynamic_int8 import DynamicInt8PTQ

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)  # even where CUDA exists
    assert evaluation_device("auto", DynamicInt8PTQ()).type == "cpu"
    with pytest.raises(ConfigError, match="runs on cpu only"):
        evaluation_device("cuda", DynamicInt8PTQ())


@pytest.mark.parametrize(("accelerator", "cuda", "expected"), [
    ("auto", True, "cuda"), ("gpu", True, "cuda"), ("cpu", True, "cpu"), ("auto", False, "cpu"),
])
def test_methods_get_the_run_device(monkeypatch, accelerator, cuda, expected):
    from omegaconf import OmegaConf

    from compbench.methods.base import MethodContext
    from compbench.training.plan import method_device

    monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda)
    device = method_device(OmegaConf.create({"trainer": {"accelerator": accelerator}}))
    assert device.type == expected
    # ptq_llm_int8's check passes exactly when the run's device is a CUDA one.
    if expected == "cuda":
        LLMInt8PTQ().check(MethodContext(family="decoder", device=device))
    else:
        with pytest.raises(ConfigError, match="CUDA"):
            LLMInt8PTQ().check(MethodContext(family="decoder", device=device))
