"""Efficiency primitives: parameter counts, bits per parameter, interleaved latency, memory."""

import math
import time
import warnings

import pytest
import torch
from method_harness import tiny_batch, tiny_model
from torch import nn
from torch.nn.utils import prune

from compbench.errors import ConfigError
from compbench.metrics.efficiency import (
    compile_for_timing,
    bits_per_param,
    count_parameters,
    measure_latency,
    model_tensor_bytes,
    peak_memory_mb,
)
from compbench.metrics.registry import spec_for


def test_counts_of_known_tiny_models():
    linear = nn.Linear(10, 4)  # 40 + 4
    assert count_parameters(linear)["eff.params"] == 44
    encoder = tiny_model("encoder")
    counts = count_parameters(encoder)
    # Int64 position/token-type id buffers are not weights; everything else is a parameter.
    assert counts["eff.params"] == sum(p.numel() for p in encoder.parameters())
    assert counts["eff.nonzero_params"] == sum(int(torch.count_nonzero(p)) for p in encoder.parameters())
    # GPT-2 ties lm_head to the token embedding: counted once.
    decoder = tiny_model("decoder")
    assert decoder.lm_head.weight is decoder.transformer.wte.weight
    assert count_parameters(decoder)["eff.params"] == sum(p.numel() for p in decoder.parameters())
    # BART keeps final_logits_bias as a persistent float buffer the model really holds.
    bart = tiny_model("encoder_decoder")
    expected = sum(p.numel() for p in bart.parameters()) + bart.final_logits_bias.numel()
    assert count_parameters(bart)["eff.params"] == expected


def test_pruned_zeros_are_present_but_not_nonzero():
    model = nn.Sequential(nn.Linear(20, 10), nn.ReLU(), nn.Linear(10, 5))
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.sign(p) * 0.01 + (p == 0) * 0.01)  # no accidental zeros
    dense = count_parameters(model)
    assert dense == {"eff.params": 265, "eff.nonzero_params": 265}
    prune.l1_unstructured(model[0], "weight", amount=0.5)  # weight_orig + weight_mask
    counts = count_parameters(model)
    assert counts["eff.params"] == 265
    assert counts["eff.nonzero_params"] == 265 - 100
    prune.remove(model[0], "weight")  # zeros baked into the parameter
    assert count_parameters(model) == counts


class PackedInt4Linear(nn.Module):
    """A module keeping two int4 weights per byte: reports its logical counts itself."""

    def __init__(self):
        super().__init__()
        self.register_buffer("packed", torch.zeros(8, 4, dtype=torch.uint8))  # 8 x 8 weights
        self.inner = nn.Linear(3, 3)  # must not be counted: the custom counts cover the module

    def compbench_param_counts(self):
        return {"params": 64, "nonzero": 60}


def test_int8_buffers_and_custom_packed_modules():
    module = nn.Module()
    module.register_buffer("qweight", torch.ones(6, 4, dtype=torch.int8))
    module.register_buffer("scale", torch.ones(6))
    module.register_buffer("mask_ids", torch.ones(6, dtype=torch.int64))
    module.register_buffer("cache", torch.ones(100), persistent=False)
    assert count_parameters(module) == {"eff.params": 30, "eff.nonzero_params": 30}
    model = nn.Sequential(PackedInt4Linear(), nn.Linear(2, 2))
    assert count_parameters(model) == {"eff.params": 64 + 6, "eff.nonzero_params": 60 + 6}


def test_torch_ao_dynamic_quantized_model_keeps_its_counts_and_shrinks_in_memory():
    model = tiny_model("encoder")
    fp32_counts, fp32_bytes = count_parameters(model), model_tensor_bytes(model)
    assert fp32_bytes == 4 * fp32_counts["eff.params"] + 2 * 514 * 8  # + the two int64 id buffers
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        quantized = torch.ao.quantization.quantize_dynamic(model, {nn.Linear}, dtype=torch.qint8)
    assert count_parameters(quantized)["eff.params"] == fp32_counts["eff.params"]
    linear_weights = sum(m.weight.numel() for m in model.modules() if isinstance(m, nn.Linear))
    assert model_tensor_bytes(quantized) == fp32_bytes - 3 * linear_weights


def test_torchao_quantized_weights_count_logical_elements():
    torchao_quant = pytest.importorskip("torchao.quantization")
    model = tiny_model("encoder")
    expected = count_parameters(model)["eff.params"]
    torchao_quant.quantize_(model, torchao_quant.Int8WeightOnlyConfig())
    counts = count_parameters(model)
    assert counts["eff.params"] == expected
    assert 0 < counts["eff.nonzero_params"] <= expected


def test_bits_per_param():
    assert bits_per_param(1000, 250) == {"eff.bits_per_param": 32.0}
    assert bits_per_param(125, 1000)["eff.bits_per_param"] == 1.0
    with pytest.raises(ValueError):
        bits_per_param(10, 0)


class Sleepy(nn.Module):
    """Wraps a model and sleeps in each forward; logs call order in a shared list."""

    def __init__(self, model, seconds, log, name):
        super().__init__()
        self.model, self.seconds, self.log, self.name = model, seconds, log, name

    def forward(self, **inputs):
        self.log.append(self.name)
        if self.seconds:
            time.sleep(self.seconds)
        return self.model(**inputs)


def test_latency_is_interleaved_ordered_and_sees_the_slow_model():
    log = []
    base = tiny_model("encoder")
    models = {"fp32": Sleepy(base, 0.0, log, "fp32"), "slow": Sleepy(base, 0.004, log, "slow")}

    def make_inputs(batch_size):
        batch = tiny_batch("encoder", batch_size=batch_size, seq_len=8)
        batch.pop("labels")
        return batch

    # Time with 1 thread (2 OpenMP threads on 2 shared, busy cores spin for hundreds of ms),
    # starting from 2 so that the restore is visible.
    torch.set_num_threads(2)
    try:
        results = measure_latency(models, make_inputs, batch_sizes=(1, 2), warmup=1, repeats=5, threads=1, baseline="fp32")
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(1)
    for name, row in results.items():
        for column in ("eff.latency_ms_p50", "eff.latency_ms_p90", "eff.latency_ms_p50_b2", "eff.latency_ms_p90_b2"):
            assert math.isfinite(row[column]) and row[column] > 0, (name, column)
            assert spec_for(column) is not None
        assert row["eff.latency_ms_p50"] <= row["eff.latency_ms_p90"]
        assert row["eff.latency_ms_p50_b2"] <= row["eff.latency_ms_p90_b2"]
        assert row["eff.throughput"] == pytest.approx(2 / (row["eff.latency_ms_p50_b2"] / 1e3))
        assert row["eff.threads"] == 1 and row["eff.batch_size"] == 2
    assert results["fp32"]["eff.latency_ratio"] == 1.0
    # The injected 4 ms sleep is a floor that noise cannot remove.
    assert results["slow"]["eff.latency_ms_p50"] >= 4.0
    assert results["slow"]["eff.latency_ratio"] > 1.0
    assert results["slow"]["eff.speedup"] == pytest.approx(1 / results["slow"]["eff.latency_ratio"])
    # Interleaved: each round calls both models (rotating who goes first), never a run of one model.
    assert len(log) == 2 * (1 + 5) * 2
    rounds = [tuple(log[i : i + 2]) for i in range(0, len(log), 2)]
    assert all(sorted(r) == ["fp32", "slow"] for r in rounds)
    assert {r[0] for r in rounds} == {"fp32", "slow"}


def test_thread_count_is_restored_after_a_failure():
    class Broken(nn.Module):
        def forward(self, **inputs):
            raise RuntimeError("boom")

    before = torch.get_num_threads()
    with pytest.raises(RuntimeError, match="boom"):
        measure_latency({"broken": Broken()}, lambda b: {"x": torch.zeros(b)}, threads=before + 1)
    assert torch.get_num_threads() == before


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(batch_sizes=(4, 8)), "including 1"),
        (dict(repeats=0), "repeats >= 1"),
        (dict(threads=0), "threads must be >= 1"),
        (dict(baseline="fp16"), "not among the timed models"),
    ],
)
def test_bad_latency_settings_are_refused(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        measure_latency({"m": nn.Identity()}, lambda b: {"input": torch.zeros(b)}, **kwargs)


def test_peak_memory_grows_with_the_activations():
    model = nn.Sequential(nn.Linear(64, 1024), nn.GELU(), nn.Linear(1024, 64))
    small = peak_memory_mb(model, {"input": torch.randn(4, 64)})
    large = peak_memory_mb(model, {"input": torch.randn(256, 64)})
    weights_mb = model_tensor_bytes(model) / 1e6
    assert small["eff.peak_mem_mb"] == pytest.approx(weights_mb + small["eff.forward_mem_mb"])
    # Batch 256: the [256, 1024] float hidden layer and its GELU output are alive together.
    assert large["eff.forward_mem_mb"] >= 2 * 256 * 1024 * 4 / 1e6
    assert large["eff.forward_mem_mb"] > 10 * small["eff.forward_mem_mb"]


def test_peak_memory_of_a_tiny_transformer_is_positive():
    batch = tiny_batch("decoder", batch_size=2, seq_len=8)
    batch.pop("labels")
    result = peak_memory_mb(tiny_model("decoder"), batch)
    assert result["eff.forward_mem_mb"] > 0
    assert result["eff.peak_mem_mb"] > result["eff.forward_mem_mb"]


def test_training_cost_columns_are_registered_and_defined_only_when_measured():
    from compbench.metrics.efficiency import training_cost
    from compbench.metrics.registry import spec_for

    row = training_cost(12.5, [0.1, 0.3, 0.2], 40.0)
    assert row == {"eff.train_time_s": 12.5, "eff.train_steps": 3, "eff.train_step_ms": pytest.approx(200.0),
                   "eff.teacher_train_time_s": 40.0}
    assert all(spec_for(column) is not None for column in row)
    assert training_cost(0.5, [], None) == {"eff.train_time_s": 0.5, "eff.train_steps": 0}


class _Scale(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(4, 4)

    def forward(self, input_ids):
        return self.linear(input_ids.float().unsqueeze(-1).expand(*input_ids.shape, 4))


def test_compiled_models_time_like_eager_ones_and_report_compile_time_apart():
    model = _Scale().eval()

    def make_inputs(b):
        return {"input_ids": torch.arange(3 * b).reshape(b, 3)}

    compiled, seconds = compile_for_timing({"m": model}, make_inputs, batch_sizes=(1, 2), threads=1)
    assert seconds["m"] > 0
    with torch.inference_mode():
        assert torch.allclose(compiled["m"](**make_inputs(2)), model(**make_inputs(2)))
    timings = measure_latency({"m": compiled["m"], "eager": model}, make_inputs, batch_sizes=(1, 2),
                              warmup=0, repeats=2, baseline="eager")
    assert timings["m"]["eff.latency_ms_p50"] > 0 and "eff.speedup" in timings["m"]
    for column in ("eff.compiled", "eff.compile_time_s"):
        assert spec_for(column) is not None


def test_size_columns_and_the_fp32_reference_read_the_bytes_on_disk(tmp_path):
    from compbench.metrics.efficiency import fp32_reference_bytes, size_columns

    tiny_model("encoder").save_pretrained(tmp_path)
    (tmp_path / "notes.txt").write_text("not a model file")
    expected = sum(p.stat().st_size for p in tmp_path.iterdir() if p.name != "notes.txt")
    assert fp32_reference_bytes(tmp_path) == expected
    assert size_columns(2_000_000, 8_000_000) == {"eff.size_mb": 2.0, "eff.compression_ratio": 4.0}
    assert math.isnan(size_columns(0, 10)["eff.compression_ratio"])


@pytest.mark.parametrize("enabled", [False, True])
def test_efficiency_columns_are_every_eff_column_of_a_run_and_all_registered(enabled):
    from compbench.metrics.efficiency import efficiency_columns, evaluation_cost

    model, baseline = tiny_model("decoder"), tiny_model("decoder")
    settings = {"enabled": enabled, "seq_len": 8, "batch_size": 2, "warmup": 0, "repeats": 2, "threads": 1}
    row = efficiency_columns(model, baseline, "decoder", size_bytes=1000, reference_bytes=4000, mode="real",
                             settings=settings)
    assert row["eff.compression_ratio"] == 4.0 and row["eff.size_mb"] == 1000 / 1e6
    assert row["eff.mode"] == "real" and row["eff.device"] == "cpu"
    assert row["eff.bits_per_param"] == pytest.approx(8000 / row["eff.params"])
    assert ("eff.latency_ms_p50" in row) == enabled and ("eff.peak_mem_mb" in row) == enabled
    if enabled:
        assert row["eff.seq_len"] == 8 and row["eff.batch_size"] == 2 and row["eff.compiled"] is False
    row.update(evaluation_cost(1.5))
    assert all(column.startswith("eff.") and spec_for(column) is not None for column in row)
