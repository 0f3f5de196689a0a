"""``compbench-bench`` / ``python -m compbench.bench``: run the benchmarks, write one JSON each
and ``SUMMARY.md``."""

from __future__ import annotations

import argparse
import datetime as dt
import json
import logging
import statistics
import sys
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from compbench.bench.contrastive import bench_contrastive_overhead
from compbench.bench.memory import bench_memory
from compbench.bench.overhead import bench_eval_overhead, bench_train_overhead
from compbench.bench.scaling import bench_scaling
from compbench.bench.size import bench_size
from compbench.bench.speed import bench_int8_parity, bench_speedup
from compbench.bench.summary import _fmt, write_summary
from compbench.bench.teacher_reuse import bench_teacher_reuse
from compbench.bench.timing import fd_silenced, load_average, load_sampler, machine_info

DEFAULT_OUT = Path("results/perf")
SCHEMA_VERSION = 1

BENCHMARKS: dict[str, Callable[[argparse.Namespace], dict[str, Any]]] = {
    "train_overhead": bench_train_overhead,
    "eval_overhead": bench_eval_overhead,
    "speedup": bench_speedup,
    "int8_parity": bench_int8_parity,
    "size": bench_size,
    "teacher_reuse": bench_teacher_reuse,
    "contrastive_overhead": bench_contrastive_overhead,
    "scaling": bench_scaling,
    "memory": bench_memory,
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="compbench-bench", description="The suite's performance benchmarks.")
    parser.add_argument("--quick", action="store_true", help="reduced shapes, ~2 minutes: checks the command")
    parser.add_argument("--only", default="", help=f"comma-separated subset of: {', '.join(BENCHMARKS)}")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="output folder (default results/perf)")
    parser.add_argument("--rounds", type=int, default=7, help="timed rounds per figure (>= 7 for quoted figures)")
    parser.add_argument("--teacher-rounds", type=int, default=None,
                        help="rounds of the teacher-reuse sweeps (default 7, 1 with --quick: each round is 12 runs)")
    parser.add_argument("--no-compile", dest="compile", action="store_false", help="skip the torch.compile rows")
    args = parser.parse_args(argv)
    only = [n for n in args.only.split(",") if n] or list(BENCHMARKS)
    unknown = [n for n in only if n not in BENCHMARKS]
    if unknown:
        parser.error(f"unknown benchmark(s) {', '.join(unknown)}; choose from {', '.join(BENCHMARKS)}.")
    if args.rounds < 1:
        parser.error("--rounds must be >= 1 (7 or more for figures you quote).")
    if args.quick:
        args.compile = False
        args.rounds = min(args.rounds, 3)
    if args.teacher_rounds is None:
        # Each round is 12 full runs (~1-1.5 min on the shared machine): 7 rounds like every figure.
        args.teacher_rounds = 1 if args.quick else 7
    with fd_silenced(), warnings.catch_warnings():  # import-time notices of torchao/Lightning
        warnings.simplefilter("ignore")
        import lightning  # noqa: F401  (imported first so that the levels below stick)
        import torchao  # noqa: F401

    import transformers

    transformers.utils.logging.disable_progress_bar()  # save_pretrained/from_pretrained bars
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    for name in ("torchao", "torch._dynamo", "torch._inductor", "lightning.pytorch", "lightning.fabric",
                 "lightning.pytorch.utilities.rank_zero", "lightning.fabric.utilities.rank_zero",
                 "transformers", "compbench"):
        logging.getLogger(name).setLevel(logging.ERROR)
    warnings.filterwarnings("ignore")
    torch.set_num_threads(1)
    args.out.mkdir(parents=True, exist_ok=True)
    command = "python -m compbench.bench " + " ".join(argv if argv is not None else sys.argv[1:])
    machine = machine_info()
    for name in only:
        before, start = load_average(), time.perf_counter()
        print(f"[{dt.datetime.now(dt.timezone.utc):%H:%M:%S}] {name} (load {before}) ...", flush=True)
        with load_sampler() as load_samples:
            result = BENCHMARKS[name](args)
        doc = {"schema_version": SCHEMA_VERSION, "benchmark": name, "command": command,
               "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"), "quick": bool(args.quick),
               "rounds": result.get("rounds", args.rounds),
               "machine": machine, "load_before": before, "load_after": load_average(),
               "load_1min_during": {"min": min(load_samples), "median": statistics.median(load_samples),
                                    "max": max(load_samples), "every_s": 10, "samples": load_samples},
               "wall_s": time.perf_counter() - start, "result": result}
        path = args.out / f"{name}.json"
        path.write_text(json.dumps(doc, indent=1, default=str))
        h = result.get("headline", {})
        print(f"  {h.get('name')}: {_fmt(h.get('value'))} (target {h.get('target')}) -> {path} "
              f"[{doc['wall_s']:.0f} s, load after {doc['load_after']}]", flush=True)
    summary = write_summary(args.out)
    print(f"summary: {summary}")
    return 0
