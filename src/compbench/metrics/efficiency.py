"""Efficiency columns: sizes on disk, parameter counts, bits per parameter, interleaved latency,
peak memory, and the cost of compressing and evaluating. Every ``eff.*`` column of a row is built
here (the pipeline passes sizes and times in; it writes no ``eff.*`` key itself).

Latency ratios are only meaningful when the compressed model and its baseline are timed side
by side: :func:`measure_latency` runs them interleaved, round after round, in one process with
a fixed thread count, so that machine noise (other jobs on shared cores, frequency scaling)
hits both alike. The evaluation stage calls :func:`efficiency_columns`, which does::

    timings = measure_latency({"baseline": teacher, "compressed": model}, make_inputs,
                              batch_sizes=(1, 8), baseline="baseline", threads=1)
    row |= timings["compressed"] | count_parameters(model)
    row |= bits_per_param(size_bytes, row["eff.params"])
    row |= peak_memory_mb(model, make_inputs(1))
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn.utils import prune

from compbench.devices import model_device, synchronize, to_device
from compbench.errors import ConfigError

log = logging.getLogger(__name__)


_MB = 1e6


# ------------------------------------------------------------------------------ parameter counts
def _pruned_tensor_names(module: nn.Module) -> set[str]:
    """Names of the tensors torch.nn.utils.prune reparametrised as ``<name>_orig * <name>_mask``."""
    return {
        hook._tensor_name
        for hook in module._forward_pre_hooks.values()
        if isinstance(hook, prune.BasePruningMethod)
    }


def _packed_weights(module: nn.Module) -> list[torch.Tensor]:
    """Weights torch.ao quantized modules keep in packed C++ objects (neither parameters nor buffers)."""
    try:
        from torch.ao.nn.quantized.modules.embedding_ops import EmbeddingPackedParams
        from torch.ao.nn.quantized.modules.linear import LinearPackedParams
    except ImportError:  # pragma: no cover - torch without torch.ao eager quantization
        return []
    if isinstance(module, LinearPackedParams):
        return [t for t in module._weight_bias() if t is not None]
    if isinstance(module, EmbeddingPackedParams):
        return [module._weight()]
    return []


def _nonzero(tensor: torch.Tensor) -> int:
    """Non-zero entries, reading quantized / tensor-subclass weights through ``dequantize``."""
    if tensor.is_quantized or (type(tensor) not in (torch.Tensor, nn.Parameter) and hasattr(tensor, "dequantize")):
        tensor = tensor.dequantize()
    return int(torch.count_nonzero(tensor))


def count_parameters(model: nn.Module) -> dict[str, int]:
    """``eff.params`` and ``eff.nonzero_params`` of the weights the model really holds.

    Counted, each tensor once (tied weights are shared): parameters (torchao quantized weights
    are tensor-subclass parameters and count their logical elements), persistent floating-point
    and integer buffers except pruning masks (e.g. int8 weights stored as buffers, BART's
    ``final_logits_bias``), and the packed weights of torch.ao quantized modules. Not counted:
    non-persistent buffers (position ids, causal masks), int64/bool buffers (indices, counters)
    and ``torch.nn.utils.prune`` masks; a pruned weight counts once, its zeros in
    ``eff.params`` but not in ``eff.nonzero_params``.

    A module storing weights in its own packed format (e.g. two int4 values per byte) reports
    its logical counts by defining ``compbench_param_counts() -> {"params": n, "nonzero": m}``;
    its tensors and children are then not inspected.
    """
    seen: set[int] = set()
    # Packed weights are fresh tensors on every call: keep them alive so that their ids, used
    # for de-duplication, are never reused by a later tensor.
    alive: list[torch.Tensor] = []
    params = nonzero = 0
    custom: list[str] = []
    for name, module in model.named_modules():
        if any(name.startswith(prefix + ".") for prefix in custom):
            continue
        if hasattr(module, "compbench_param_counts"):
            counts = module.compbench_param_counts()
            params, nonzero = params + int(counts["params"]), nonzero + int(counts["nonzero"])
            custom.append(name)
            continue
        pruned = _pruned_tensor_names(module)
        tensors: list[torch.Tensor] = []
        for param_name, param in module.named_parameters(recurse=False):
            if param_name.endswith("_orig") and param_name[: -len("_orig")] in pruned:
                # Count the effective (masked) weight's zeros, with the size of the original.
                seen_key = id(param)
                if seen_key not in seen:
                    seen.add(seen_key)
                    params += param.numel()
                    nonzero += _nonzero(getattr(module, param_name[: -len("_orig")]))
                continue
            tensors.append(param)
        for buffer_name, buffer in module.named_buffers(recurse=False):
            if buffer_name in module._non_persistent_buffers_set or buffer.dtype in (torch.int64, torch.bool):
                continue
            if buffer_name.endswith("_mask") and buffer_name[: -len("_mask")] in pruned:
                continue
            tensors.append(buffer)
        tensors.extend(_packed_weights(module))
        alive.extend(tensors)
        for tensor in tensors:
            if id(tensor) in seen:
                continue
            seen.add(id(tensor))
            params += tensor.numel()
            nonzero += _nonzero(tensor)
    return {"eff.params": params, "eff.nonzero_params": nonzero}


def bits_per_param(export_size_bytes: int, params: int) -> dict[str, float]:
    """``eff.bits_per_param = 8 * export_size_bytes / params``.

    The exported bytes are what is on disk (``artifact_size_bytes``): weights plus scales, zero
    points, sparsity bitmaps, headers and the config file, so this is the real storage cost
    per parameter and is slightly above the nominal bit width (e.g. ~8.1 for int8 weights).
    """
    if params <= 0 or export_size_bytes < 0:
        raise ValueError(f"bits per parameter needs params > 0 and a size >= 0, got {params} and {export_size_bytes}.")
    return {"eff.bits_per_param": 8.0 * export_size_bytes / params}


# ------------------------------------------------------------------------------ latency
def measure_latency(
    models: Mapping[str, nn.Module],
    make_inputs: Callable[[int], Mapping[str, Any]],
    batch_sizes: tuple[int, ...] = (1, 8),
    warmup: int = 3,
    repeats: int = 20,
    threads: int | None = None,
    baseline: str | None = None,
    samples_out: dict[str, dict[int, list[float]]] | None = None,
) -> dict[str, dict[str, float]]:
    """Time the forward pass of several models interleaved in this process.

    For each batch size, every round calls each model once on the same inputs (the order rotates
    each round so that no model always runs first); the first ``warmup`` rounds are discarded.
    CUDA work is synchronised before and after each call. Models run in eval mode under
    ``torch.inference_mode``.

    Args:
        models: name -> model (each on the device it should be timed on).
        make_inputs: batch size -> model inputs (tensors are moved to each model's device).
        batch_sizes: must contain 1 (unsuffixed columns); every other B gives ``_b{B}`` columns.
        warmup: untimed rounds per batch size.
        repeats: timed rounds per batch size.
        threads: ``torch.set_num_threads`` during the timing (restored after); None keeps the
            current setting. Recorded as ``eff.threads``.
        baseline: name of the model the ratios are taken against; None gives no ratio columns.
        samples_out: if given, filled with name -> batch size -> every timed latency (ms, in
            round order), for callers that keep the raw timings (``compbench.bench``).

    Returns:
        name -> ``eff.latency_ms_p50/_p90`` (batch 1), ``eff.latency_ms_p50_b{B}/_p90_b{B}``,
        ``eff.throughput`` (largest B / its median latency, samples/s), ``eff.batch_size``,
        ``eff.threads`` and, with a baseline, ``eff.latency_ratio`` and ``eff.speedup``.
    """
    if not models:
        raise ConfigError("measure_latency needs at least one model to time.")
    if 1 not in batch_sizes or any(not isinstance(b, int) or b < 1 for b in batch_sizes):
        raise ConfigError(f"latency batch sizes must be positive integers including 1, got {tuple(batch_sizes)}.")
    if warmup < 0 or repeats < 1:
        raise ConfigError(f"latency needs warmup >= 0 and repeats >= 1, got {warmup} and {repeats}.")
    if threads is not None and threads < 1:
        raise ConfigError(f"latency threads must be >= 1 (or null to keep torch's setting), got {threads}.")
    if baseline is not None and baseline not in models:
        raise ConfigError(f"latency baseline {baseline!r} is not among the timed models {sorted(models)}.")

    names = list(models)
    previous_threads = torch.get_num_threads()
    samples: dict[str, dict[int, list[float]]] = {n: {b: [] for b in batch_sizes} for n in names}
    try:
        if threads is not None:
            torch.set_num_threads(threads)
        used_threads = torch.get_num_threads()
        for model in models.values():
            if isinstance(model, nn.Module):
                model.eval()
        with torch.inference_mode():
            for batch_size in sorted(set(batch_sizes)):
                cpu_inputs = make_inputs(batch_size)
                inputs = {n: to_device(cpu_inputs, model_device(models[n])) for n in names}
                for round_index in range(warmup + repeats):
                    shift = round_index % len(names)
                    for name in names[shift:] + names[:shift]:
                        device = model_device(models[name])
                        synchronize(device)
                        start = time.perf_counter_ns()
                        models[name](**inputs[name])
                        synchronize(device)
                        elapsed_ms = (time.perf_counter_ns() - start) / 1e6
                        if round_index >= warmup:
                            samples[name][batch_size].append(elapsed_ms)
    finally:
        torch.set_num_threads(previous_threads)

    if samples_out is not None:
        samples_out.update(samples)
    largest = max(batch_sizes)
    results: dict[str, dict[str, float]] = {}
    for name in names:
        row: dict[str, float] = {}
        for batch_size in sorted(set(batch_sizes)):
            suffix = "" if batch_size == 1 else f"_b{batch_size}"
            p50, p90 = np.percentile(samples[name][batch_size], [50, 90])
            row[f"eff.latency_ms_p50{suffix}"] = float(p50)
            row[f"eff.latency_ms_p90{suffix}"] = float(p90)
        row["eff.throughput"] = largest / (float(np.median(samples[name][largest])) / 1e3)
        row["eff.batch_size"] = largest
        row["eff.threads"] = used_threads
        results[name] = row
    if baseline is not None:
        base = results[baseline]["eff.latency_ms_p50"]
        for row in results.values():
            row["eff.latency_ratio"] = row["eff.latency_ms_p50"] / base
            row["eff.speedup"] = base / row["eff.latency_ms_p50"]
    return results


def compile_for_timing(
    models: Mapping[str, nn.Module],
    make_inputs: Callable[[int], Mapping[str, Any]],
    batch_sizes: tuple[int, ...] = (1, 8),
    threads: int | None = None,
) -> tuple[dict[str, Callable[..., Any]], dict[str, float]]:
    """``torch.compile`` each model and compile it for every timed batch size, outside any timing.

    Returns (name -> compiled callable, name -> seconds spent compiling). The seconds are the
    wall time of the first call per batch size (Dynamo tracing + Inductor code generation + that
    one forward), under ``inference_mode`` like :func:`measure_latency`, so the timed calls that
    follow hit the compiled graphs without recompiling. They are reported on their own
    (``eff.compile_time_s``) and never enter the latency.
    """
    previous_threads = torch.get_num_threads()
    compiled: dict[str, Callable[..., Any]] = {}
    seconds: dict[str, float] = {}
    try:
        if threads is not None:
            torch.set_num_threads(threads)
        for name, model in models.items():
            model.eval()
            compiled[name] = torch.compile(model)
            start = time.perf_counter()
            with torch.inference_mode():
                for batch_size in sorted(set(batch_sizes)):
                    compiled[name](**to_device(make_inputs(batch_size), model_device(model)))
            synchronize(model_device(model))
            seconds[name] = time.perf_counter() - start
    finally:
        torch.set_num_threads(previous_threads)
    return compiled, seconds


# ------------------------------------------------------------------------------ memory
def model_tensor_bytes(model: nn.Module) -> int:
    """Bytes of the tensors the model holds (parameters, buffers, packed/quantized weights), each
    storage once; tensor subclasses (torchao) are counted through their inner tensors."""
    seen: set[tuple[Any, ...]] = set()
    total = 0

    def add(value: Any) -> None:
        nonlocal total
        if isinstance(value, (tuple, list)):
            for item in value:
                add(item)
            return
        if not isinstance(value, torch.Tensor):
            return
        if hasattr(value, "__tensor_flatten__"):
            inner_names, _ = value.__tensor_flatten__()
            for inner in inner_names:
                add(getattr(value, inner))
            return
        key = (str(value.device), value.data_ptr(), value.numel(), value.dtype)
        if key not in seen:
            seen.add(key)
            total += value.numel() * value.element_size()

    alive = []  # packed weights are fresh tensors: keep them so their addresses are not reused
    for module in model.modules():
        for tensor in list(module.parameters(recurse=False)) + list(module.buffers(recurse=False)):
            add(tensor)
        alive.append(_packed_weights(module))
        add(alive[-1])
    return total


def _cpu_forward_peak_bytes(model: nn.Module, inputs: Mapping[str, Any]) -> int:
    """Peak net bytes allocated by PyTorch's CPU allocator during one forward.

    The profiler records every allocation and free (``profile_memory=True``); their running sum
    in time order is the memory held by the forward's tensors at each instant. torch has no
    public CPU peak-memory counter, so the kineto event list is read directly.
    """
    from torch.profiler import ProfilerActivity, profile

    from compbench.console import native_stderr_to_log

    # Kineto announces every profiling session on fd 2 ("USDT: ... profiler_start"): to run.log.
    with native_stderr_to_log(log), profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        output = model(**inputs)
        del output
    events = [
        (event.start_ns(), event.nbytes())
        for event in prof.profiler.kineto_results.events()
        if event.name() == "[memory]" and event.device_type() == torch.autograd.DeviceType.CPU
    ]
    running = peak = 0
    for _, nbytes in sorted(events, key=lambda e: e[0]):
        running += nbytes
        peak = max(peak, running)
    return peak


def peak_memory_mb(model: nn.Module, inputs: Mapping[str, Any]) -> dict[str, float]:
    """Peak memory of one forward: ``eff.peak_mem_mb`` and ``eff.forward_mem_mb`` (MB = 10^6 B).

    ``eff.forward_mem_mb`` is the peak of memory allocated during the forward on top of what
    was allocated before it (activations, workspaces, weights dequantized on the fly): on CUDA
    ``torch.cuda.max_memory_allocated`` minus the allocation before the call; on CPU the peak
    running sum of the profiler's allocation events. ``eff.peak_mem_mb`` adds the model's own
    tensors (:func:`model_tensor_bytes`), the same way on both devices. The Python interpreter,
    library code and allocator caching are not counted. One untimed forward runs first so that
    lazily created state does not count.
    """
    device = model_device(model)
    inputs = to_device(inputs, device)
    model.eval()
    with torch.inference_mode():
        model(**inputs)
        if device.type == "cuda":
            synchronize(device)
            torch.cuda.reset_peak_memory_stats(device)
            before = torch.cuda.memory_allocated(device)
            output = model(**inputs)
            synchronize(device)
            forward_bytes = torch.cuda.max_memory_allocated(device) - before
            del output
        else:
            forward_bytes = _cpu_forward_peak_bytes(model, inputs)
    return {
        "eff.peak_mem_mb": (model_tensor_bytes(model) + forward_bytes) / _MB,
        "eff.forward_mem_mb": forward_bytes / _MB,
    }

# ------------------------------------------------------------------------------ size on disk
def fp32_reference_bytes(teacher_dir: Path) -> int:
    """Bytes of the fp32 reference: what ``save_pretrained`` wrote for the uncompressed teacher
    (its safetensors weights and config files)."""
    files = [p for p in Path(teacher_dir).iterdir()
             if p.suffix == ".safetensors" or p.name in ("config.json", "generation_config.json")]
    return sum(p.stat().st_size for p in files)


def size_columns(size_bytes: int, reference_bytes: int) -> dict[str, float]:
    """``eff.size_mb`` of the export (``size_bytes`` on disk, MB = 10^6 B) and
    ``eff.compression_ratio = reference_bytes / size_bytes`` (NaN for an empty export)."""
    return {"eff.size_mb": size_bytes / _MB,
            "eff.compression_ratio": reference_bytes / size_bytes if size_bytes else float("nan")}


# ------------------------------------------------------------------------------ all eff.* columns of a run
def latency_inputs(model: nn.Module, family: str, seq_len: int) -> Callable[[int], dict[str, torch.Tensor]]:
    """``make_inputs(batch)`` for timing: fixed random token ids of ``seq_len`` (and a decoder
    prefix of ``seq_len // 4`` for encoder-decoders: one teacher-forced forward)."""
    vocab = int(model.config.vocab_size)

    def make_inputs(batch: int) -> dict[str, torch.Tensor]:
        g = torch.Generator().manual_seed(batch)
        ids = torch.randint(4, vocab, (batch, seq_len), generator=g)
        inputs = {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
        if family != "encoder":  # a scoring forward: no KV cache (it also makes torch.compile recompile per layer)
            inputs["use_cache"] = False
        if family == "encoder_decoder":
            inputs["decoder_input_ids"] = torch.randint(4, vocab, (batch, max(1, seq_len // 4)), generator=g)
        return inputs

    return make_inputs


def efficiency_columns(model: nn.Module, baseline: nn.Module, family: str, *, size_bytes: int,
                       reference_bytes: int, mode: str, settings: Mapping[str, Any],
                       compile: bool = False) -> dict[str, Any]:
    """Every ``eff.*`` column of an evaluated model, except the cost columns (:func:`training_cost`,
    :func:`evaluation_cost`).

    Args:
        model: the compressed model, on the device it is evaluated on.
        baseline: the fp32 teacher on the same device; the latency ratio is taken against it.
        family: ``encoder``, ``decoder`` or ``encoder_decoder`` (shapes the timing inputs).
        size_bytes: bytes on disk of the export; reference_bytes: of the fp32 teacher.
        mode: the method's ``eff_mode`` (``eff.mode``: real kernels or simulated).
        settings: ``evaluation.efficiency`` (enabled, seq_len, batch_size, warmup, repeats, threads).
        compile: time ``torch.compile``'d models (both; compile time kept apart).

    Returns:
        ``eff.size_mb``, ``eff.compression_ratio``, ``eff.mode``, ``eff.device``, parameter counts
        and ``eff.bits_per_param``; with timing enabled also the latency, throughput, memory,
        ``eff.compiled``, ``eff.seq_len`` (and ``eff.compile_time_s`` when compiled).
    """
    counts = count_parameters(model)
    row: dict[str, Any] = {**size_columns(size_bytes, reference_bytes), "eff.mode": mode,
                           "eff.device": model_device(model).type, **counts,
                           **bits_per_param(size_bytes, counts["eff.params"])}
    if not settings.get("enabled", True):
        return row
    limit = getattr(model.config, "n_positions", None) or getattr(model.config, "max_position_embeddings", None)
    seq_len = min(int(settings["seq_len"]), int(limit) - 2 if limit else int(settings["seq_len"]))
    make_inputs = latency_inputs(model, family, seq_len)
    batch_sizes = (1, int(settings["batch_size"]))
    threads = settings.get("threads")
    timed = {"baseline": baseline, "compressed": model}
    if compile:  # both compiled, so the ratio compares compiled with compiled; compile time kept apart
        timed, compile_s = compile_for_timing(timed, make_inputs, batch_sizes, threads=threads)
        row["eff.compile_time_s"] = compile_s["compressed"]
    timings = measure_latency(
        timed, make_inputs, batch_sizes=batch_sizes, warmup=int(settings["warmup"]),
        repeats=int(settings["repeats"]), threads=threads, baseline="baseline",
    )
    row.update(timings["compressed"])
    row["eff.compiled"] = compile
    row.update(peak_memory_mb(model, make_inputs(1)))
    row["eff.seq_len"] = seq_len
    return row


def evaluation_cost(eval_time_s: float) -> dict[str, float]:
    """``eff.eval_time_s``: wall time of the whole evaluation stage (all four metric groups), s."""
    return {"eff.eval_time_s": float(eval_time_s)}


# ------------------------------------------------------------------------------ cost of compressing
def training_cost(compress_time_s: float, step_times_s: list[float], teacher_time_s: float | None) -> dict[str, float]:
    """The cost columns of a run's compression phase.

    Args:
        compress_time_s: wall time of the whole method chain (prepare, training, finalize), s.
        step_times_s: durations of the chain's training steps (forward, teacher forward, backward,
            optimizer step), s; empty when no stage trains.
        teacher_time_s: wall time the teacher's fine-tuning took when it was trained (read back
            from the teacher cache on reuse), or None without fine-tuning.

    Returns:
        ``eff.train_time_s``, ``eff.train_steps``, and when defined ``eff.train_step_ms`` (median
        step) and ``eff.teacher_train_time_s``. A resumed run counts this attempt's steps only.
    """
    row = {"eff.train_time_s": float(compress_time_s), "eff.train_steps": len(step_times_s)}
    # Absent rather than NaN when undefined (no training stage, no fine-tuning).
    if step_times_s:
        row["eff.train_step_ms"] = float(np.median(step_times_s)) * 1e3
    if teacher_time_s is not None:
        row["eff.teacher_train_time_s"] = float(teacher_time_s)
    return row
