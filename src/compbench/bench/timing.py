"""The timing primitives every benchmark uses: the machine description, load sampling,
interleaved timing of several callables in one process, ratios of medians, thread control, and
silencing of third-party output while timing."""

from __future__ import annotations

import contextlib
import logging
import math
import os
import platform
import statistics
import sys
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

#: CPU flags worth naming in the summary (all flags are stored in the JSON).
KEY_FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_bf16", "amx_int8", "amx_tile")


def machine_info() -> dict[str, Any]:
    """CPU model and flags, cores, threads, library versions (what the timings depend on)."""
    import transformers

    from compbench.records.provenance import cpu_model

    flags: list[str] = []
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                flags = line.split(":", 1)[1].split()
                break
    versions = {"python": platform.python_version(), "torch": torch.__version__,
                "transformers": transformers.__version__}
    with contextlib.suppress(Exception):
        import torchao

        versions["torchao"] = torchao.__version__
    return {
        "cpu": cpu_model(),
        "key_flags": [f for f in KEY_FLAGS if f in flags],
        "flags": flags,
        "cores": os.cpu_count(),
        "usable_cores": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "platform": platform.platform(),
        "versions": versions,
    }


def load_average() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


@contextlib.contextmanager
def load_sampler(every_s: float = 10.0):
    """Samples the 1-minute load average every ``every_s`` seconds while a benchmark runs
    (before/after alone miss a neighbour's job that starts and ends in between)."""
    import threading

    samples: list[float] = [load_average()[0]]
    stop = threading.Event()

    def sample():
        while not stop.wait(every_s):
            samples.append(load_average()[0])

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    try:
        yield samples
    finally:
        stop.set()
        thread.join()
        samples.append(load_average()[0])


def interleaved(fns: dict[str, Callable[[], Any]], rounds: int, warmup: int = 1) -> dict[str, list[float]]:
    """Seconds of each callable, called once per round in rotating order; warm-up rounds dropped."""
    names = list(fns)
    times: dict[str, list[float]] = {n: [] for n in names}
    for index in range(warmup + rounds):
        shift = index % len(names)
        for name in names[shift:] + names[:shift]:
            start = time.perf_counter()
            fns[name]()
            elapsed = time.perf_counter() - start
            if index >= warmup:
                times[name].append(elapsed)
    return times


def ratio(times: dict[str, list[float]], num: str, den: str) -> dict[str, Any]:
    """``num``/``den``: ratio of medians (the figure) and the median of the per-round ratios."""
    a, b = times[num], times[den]
    return {
        "ratio": statistics.median(a) / statistics.median(b),
        "median_of_round_ratios": statistics.median(x / y for x, y in zip(a, b)),
        "rounds": len(a),
    }


def medians(times: dict[str, list[float]]) -> dict[str, float]:
    return {name: statistics.median(values) for name, values in times.items()}


def loglog_slope(xs: list[float], ys: list[float]) -> float:
    """Least-squares slope of log(y) on log(x)."""
    lx, ly = [math.log(x) for x in xs], [math.log(y) for y in ys]
    mx, my = sum(lx) / len(lx), sum(ly) / len(ly)
    return sum((a - mx) * (b - my) for a, b in zip(lx, ly)) / sum((a - mx) ** 2 for a in lx)


@contextlib.contextmanager
def threads(n: int):
    previous = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


@contextlib.contextmanager
def fd_silenced():
    """Send file descriptors 1 and 2 to /dev/null (C++ libraries print there past Python's logging)."""
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 1)
        os.dup2(devnull, 2)
        yield
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os.dup2(saved[0], 1)
        os.dup2(saved[1], 2)
        for fd in (*saved, devnull):
            os.close(fd)


@contextlib.contextmanager
def quiet():
    """Silence the pipeline's per-run logging while sweeping (the run directories keep it)."""
    root = logging.getLogger()
    previous = root.level
    root.setLevel(logging.WARNING)
    for name in ("lightning", "lightning.pytorch", "lightning.fabric"):
        logging.getLogger(name).setLevel(logging.WARNING)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        root.setLevel(previous)
