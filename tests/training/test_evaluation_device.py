"""Choice of the evaluation device, refused with one sentence when impossible."""

from __future__ import annotations

import pytest
import torch

from compbench.errors import ConfigError
from compbench.methods.none import NoCompression
from compbench.methods.ptq_llm_int8 import LLMInt8PTQ
from compbench.training.pipeline import evaluation_device


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
