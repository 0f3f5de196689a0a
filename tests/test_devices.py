"""Device helpers: where a model lives, moving inputs there."""

import torch
from torch import nn

from compbench.devices import model_device, synchronize, to_device


def test_model_device_reads_parameters_then_buffers_then_defaults_to_cpu():
    assert model_device(nn.Linear(2, 2)) == torch.device("cpu")
    buffers_only = nn.Module()
    buffers_only.register_buffer("b", torch.zeros(1, dtype=torch.float64))
    assert model_device(buffers_only) == torch.device("cpu")
    assert model_device(nn.ReLU()) == torch.device("cpu")


def test_model_device_reads_a_compiled_module_through_its_original():
    wrapper = nn.Module()
    wrapper.own = nn.Parameter(torch.zeros(1))  # listed first by wrapper.parameters(), on the CPU
    wrapper._orig_mod = nn.Linear(2, 2, device="meta")  # what torch.compile's wrapper exposes
    assert model_device(wrapper) == torch.device("meta")


def test_to_device_moves_tensors_only():
    inputs = {"input_ids": torch.ones(1, 3, dtype=torch.long), "use_cache": False}
    moved = to_device(inputs, torch.device("meta"))
    assert moved["input_ids"].device == torch.device("meta") and moved["use_cache"] is False
    assert inputs["input_ids"].device == torch.device("cpu")  # the caller's dict is not changed
    synchronize(torch.device("cpu"))  # a no-op off CUDA
