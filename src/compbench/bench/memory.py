"""Peak resident memory of one ``compbench`` run as a child process (``memory``)."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from compbench.bench.fixtures import gpt2_config, lm_task


_RSS_PROBE = """
import atexit, runpy, sys
out = sys.argv[1]
def _hwm():
    with open("/proc/self/status") as status, open(out, "w") as handle:
        handle.write(next(line for line in status if line.startswith("VmHWM")).split()[1])
atexit.register(_hwm)
sys.argv = ["compbench", *sys.argv[2:]]
runpy.run_module("compbench.cli", run_name="__main__")
"""


def _peak_rss_mb(args: list[str], cwd: Path, probe_file: Path) -> tuple[float, int, float]:
    """(peak RSS MB of a ``compbench`` child, its exit code, wall seconds).

    The child reads its own ``VmHWM`` (the high-water mark of its resident memory) from
    ``/proc/self/status`` at exit. ``ru_maxrss`` from ``wait4`` would not do: Linux carries it
    across ``exec`` and the forked child starts as a copy of this (large) process.
    """
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", _RSS_PROBE, str(probe_file), *args], cwd=cwd,
                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    kib = float(probe_file.read_text()) if probe_file.exists() else float("nan")
    return kib * 1024 / 1e6, proc.returncode, time.perf_counter() - start


def bench_memory(args) -> dict[str, Any]:
    """Peak resident memory (MB = 10^6 B) of one ``python -m compbench.cli`` child process:
    the default tiny run, and an evaluation-only run (``finetune.enabled=false``, ``method=none``)
    of a GPT-2-small model (GPT2Config(): 124M parameters, random weights, saved to a local folder
    with the smoke LM tokenizer and loaded through ``model=gpt2 model.name_or_path=<folder>``) on
    the smoke LM task with capped evaluation sets and one perturbation. Peak RSS is the child's
    own ``VmHWM`` (see ``_peak_rss_mb``)."""
    from transformers import GPT2LMHeadModel

    with tempfile.TemporaryDirectory() as tmp:
        runs = {"tiny_default": ["logger=none"]}
        if args.quick:
            runs = {"tiny_default": ["logger=none", "debug=fast", "evaluation.robustness.enabled=false"]}
        else:
            folder = Path(tmp) / "gpt2_small_random"
            _, tokenizer = lm_task(128, 8, 8, Path(tmp) / "cache")
            torch.manual_seed(0)
            GPT2LMHeadModel(gpt2_config(False)).save_pretrained(folder)
            tokenizer.save_pretrained(folder)
            runs["gpt2_small_eval"] = [
                "model=gpt2", f"model.name_or_path={folder}", "task=smoke_lm", "finetune.enabled=false",
                "logger=none", "task.max_length=128", "task.stride=64", "task.max_eval_samples=16",
                "evaluation.robustness.max_examples=8",
                "evaluation.robustness.perturbations=[{name: char_swap, rate: 0.05}]",
                "evaluation.calibration.temperature_scaling=false", "evaluation.efficiency.repeats=3",
                "evaluation.efficiency.warmup=1"]
        out: dict[str, Any] = {"description": bench_memory.__doc__, "runs": {}}
        for name, overrides in runs.items():
            cli_args = [f"paths.output_dir={tmp}/{name}", *overrides]
            mb, code, wall = _peak_rss_mb(cli_args, Path.cwd(), Path(tmp) / f"{name}.vmhwm")
            out["runs"][name] = {"command": " ".join(["python -m compbench.cli", *cli_args]), "peak_rss_mb": mb,
                                 "exit_code": code, "wall_s": wall}
    first = next(iter(out["runs"]))
    out["headline"] = {"name": f"peak RSS of one run ({first}), MB", "value": out["runs"][first]["peak_rss_mb"],
                       "target": "(descriptive)", "met": None}
    return out
