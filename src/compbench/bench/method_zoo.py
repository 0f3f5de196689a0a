"""``python -m compbench.bench.method_zoo``: every compression method on the GPT-2-small shape,
export size and CPU latency vs fp32.

Usage::

    OMP_NUM_THREADS=1 python -m compbench.bench.method_zoo [--threads 1] [--repeats 10]
        [--warmup 3] [--steps 2] [--seq-len 128] [--n-layer 12] [--only qat,kd]

The fp32 "teacher" is ``GPT2LMHeadModel(GPT2Config())`` with random weights (seed 0; no hub
access; sizes and speeds do not depend on the values), exported with ``method=none`` as the fp32
reference. Every ``conf/method/*.yaml`` (except ``chain.yaml``) is built with
``compbench.methods.build_method`` from the YAML plus the overrides of :func:`variants` (training
methods get ``max_steps=--steps``), then run through the pipeline's own lifecycle
(``compbench.methods.lifecycle.compress``: check -> prepare -> --steps training steps -> finalize,
training with its ``PlainTraining`` loop: AdamW, linear warm-up/decay, the teacher forwarded under
no_grad, on fixed random 4 x 128 token batches) -> export -> load_export. The reloaded model's
logits are compared with the in-memory finalized model's (``reload max|d|``). A method refused
by ``check`` (``ptq_llm_int8`` on CPU) gets its refusal sentence as its row.

Columns:

* ``export MB``: bytes on disk of the export (``artifact_size_bytes``), MB = 10^6 bytes;
  ``size ratio`` = export bytes / fp32 export bytes (smaller is better).
* ``latency p50 ms``: median forward time of the *reloaded* model (what a user ships) at batch
  1 x ``--seq-len``, timed with ``compbench.metrics.efficiency.measure_latency`` interleaved
  round by round with the reloaded fp32 reference (``fp32 p50 ms``, same pair); ``latency
  ratio`` = compressed / fp32 and ``speed-up`` = fp32 / compressed come from that pair. Each
  model is paired with the reference in turn rather than all timed together, because ~17
  GPT-2-small models held at once (~0.5 GB each) do not fit beside the other jobs of a
  shared machine; the reference column shows how much the machine drifted between pairs.
* ``params`` / ``nonzero``: ``compbench.metrics.efficiency.count_parameters`` of the reloaded
  model (each tied tensor once).
"""

from __future__ import annotations

import argparse
import copy
import gc
import os
import shlex
import shutil
import statistics
import sys
import tempfile
import time
import traceback
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from omegaconf import OmegaConf
from transformers import GPT2Config, GPT2LMHeadModel
from transformers.utils import logging as hf_logging

from compbench.bench.fixtures import training_settings
from compbench.configs import conf_dir
from compbench.errors import ConfigError
from compbench.methods import build_method
from compbench.methods.base import Method, MethodContext
from compbench.methods.export import artifact_size_bytes, load_export
from compbench.methods.lifecycle import PlainTraining, compress
from compbench.metrics.efficiency import count_parameters, measure_latency
from compbench.records.provenance import hardware

#: Method configs that are not one method (``chain`` composes other methods' configs).
NOT_A_METHOD = {"chain"}
REFERENCE = "none"

def variants(n_layer: int) -> dict[str, list[tuple[str, dict[str, Any]]]]:
    """(label, overrides of the YAML) per method config, in table order.

    A method config missing here still runs, with its YAML values, after these.
    """
    return {
        "none": [("none (fp32 reference)", {})],
        "prune_magnitude": [
            ("prune_magnitude 50%", {"sparsity": 0.5}),
            ("prune_magnitude 80%", {"sparsity": 0.8}),
            ("prune_magnitude 80% +emb+head", {"sparsity": 0.8, "include_embeddings": True, "include_head": True}),
        ],
        "prune_structured": [
            ("prune_structured 50% heads+FFN", {"head_sparsity": 0.5, "ffn_sparsity": 0.5}),
            ("prune_structured drop half layers", {"head_sparsity": 0.0, "ffn_sparsity": 0.0,
                                                   "drop_layers": "keep_every_k", "k": 2}),
        ],
        "kd": [(f"kd {max(1, n_layer // 2)}-of-{n_layer} layers", {"student_layers": max(1, n_layer // 2)})],
        "ptq_weight_only": [
            ("ptq_weight_only W4 E-fp16 (yaml e_bits=null)", {}),  # unquantized tensors are stored fp16
            ("ptq_weight_only W8 E8", {"w_bits": 8, "e_bits": 8}),
            ("ptq_weight_only W4 E4", {"w_bits": 4, "e_bits": 4}),
            ("ptq_weight_only W2 E2", {"w_bits": 2, "e_bits": 2}),
        ],
        "ptq_dynamic_int8": [("ptq_dynamic_int8", {})],
        "ptq_llm_int8": [("ptq_llm_int8", {})],
        "qat": [
            ("qat 8-8-8", {"w_bits": 8, "e_bits": 8, "a_bits": 8}),
            ("qat 4-4-8", {"w_bits": 4, "e_bits": 4, "a_bits": 8}),
            ("qat 2-2-8", {"w_bits": 2, "e_bits": 2, "a_bits": 8}),
        ],
        "contrastive_qat": [("contrastive_qat 2-2-8", {"w_bits": 2, "e_bits": 2, "a_bits": 8})],
    }


#: Training batches: 4 sequences x --seq-len tokens, as in the issue.
TRAIN_BATCH_SIZE = 4
#: Distinct fixed batches, cycled over the training steps.
TRAIN_BATCHES = 2


@dataclass
class Row:
    """One line of the table; ``note`` replaces the numbers when the variant did not run."""

    label: str
    eff_mode: str = "-"
    params: int | None = None
    nonzero: int | None = None
    size_bytes: int | None = None
    latency_ms: float | None = None
    fp32_latency_ms: float | None = None
    latency_ratio: float | None = None
    speedup: float | None = None
    reload_diff: float | None = None
    seconds: dict[str, float] = field(default_factory=dict)
    note: str = ""


def method_configs(n_layer: int, only: set[str] | None) -> list[tuple[str, str, Any]]:
    """(method name, label, composed config) for every method YAML and its variants, reference first."""
    method_dir = conf_dir() / "method"
    table = variants(n_layer)
    found = {p.stem for p in method_dir.glob("*.yaml")} - NOT_A_METHOD
    if REFERENCE not in found:
        raise ConfigError(f"{method_dir} has no {REFERENCE}.yaml; the fp32 reference needs method=none.")
    names = [n for n in table if n in found] + sorted(found - set(table))
    out = []
    for name in names:
        if only is not None and name not in only and name != REFERENCE:
            continue
        for label, overrides in table.get(name, [(f"{name} (yaml)", {})]):
            cfg = OmegaConf.load(method_dir / f"{name}.yaml")
            for key, value in overrides.items():
                cfg[key] = value
            out.append((name, label, cfg))
    return out


def shorten_training(cfg: Any, steps: int) -> None:
    """Training methods (YAML ``max_steps`` > 0) train ``steps`` steps; one-shot ones (0, or null:
    ``prune_magnitude when=after`` trains 0 steps unless told) stay as they are."""
    if cfg.get("max_steps") is not None and int(cfg.max_steps) > 0:
        cfg.max_steps = steps
        for key in ("end_step",):  # schedules ending after max_steps would be refused
            if cfg.get(key) is not None:
                cfg[key] = steps


def compress_and_reload(method: Method, teacher: torch.nn.Module, ctx: MethodContext, batches: list[dict],
                        inputs: dict[str, torch.Tensor], out_dir: Path, row: Row) -> torch.nn.Module:
    """The pipeline's lifecycle (``compress``: check -> prepare -> train -> finalize) with a plain
    training loop (AdamW, linear warm-up/decay, teacher under no_grad), then export -> load_export;
    fills ``row``, returns the reload."""
    clock = time.perf_counter()
    training = PlainTraining(batches, teacher=teacher, schedule=True, **training_settings())
    model, _ = compress(copy.deepcopy(teacher).requires_grad_(True), [method], lambda index, m: ctx, training)
    row.seconds["compress"] = time.perf_counter() - clock
    clock = time.perf_counter()
    with torch.inference_mode():
        logits = model(**inputs).logits.float()
    method.export(model, out_dir, ctx)
    row.seconds["export"] = time.perf_counter() - clock
    row.size_bytes = artifact_size_bytes(out_dir)
    del model
    gc.collect()
    reloaded = load_export(out_dir)
    with torch.inference_mode():
        row.reload_diff = float((reloaded(**inputs).logits.float() - logits).abs().max())
    counts = count_parameters(reloaded)
    row.params, row.nonzero = counts["eff.params"], counts["eff.nonzero_params"]
    return reloaded


def time_pair(reference: torch.nn.Module, model: torch.nn.Module, inputs: dict[str, torch.Tensor],
              args: argparse.Namespace, row: Row) -> None:
    """Latency of ``model`` and the fp32 reference, interleaved in one ``measure_latency`` call."""
    timings = measure_latency(
        {"fp32": reference, "compressed": model}, lambda batch_size: inputs, batch_sizes=(1,),
        warmup=args.warmup, repeats=args.repeats, threads=args.threads, baseline="fp32",
    )
    row.latency_ms = timings["compressed"]["eff.latency_ms_p50"]
    row.fp32_latency_ms = timings["fp32"]["eff.latency_ms_p50"]
    row.latency_ratio = timings["compressed"]["eff.latency_ratio"]
    row.speedup = timings["compressed"]["eff.speedup"]


def _num(value: float | None, fmt: str) -> str:
    return "-" if value is None else format(value, fmt)


def markdown_table(rows: list[Row], reference_bytes: int) -> str:
    """The result table (Markdown)."""
    header = ["variant", "eff.mode", "params", "nonzero", "export MB", "size ratio vs fp32",
              "latency p50 ms", "fp32 p50 ms (same pair)", "latency ratio (compressed/fp32)", "speed-up",
              "reload max\\|Δ\\|"]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(["---"] * len(header)) + "|"]
    for row in rows:
        if row.note:
            empty_cells = [""] * (len(header) - 3)
            lines.append(f"| {row.label} | {row.eff_mode} | " + " | ".join([row.note, *empty_cells]) + " |")
            continue
        cells = [
            row.label, row.eff_mode, _num(row.params, ",d"), _num(row.nonzero, ",d"),
            _num(row.size_bytes / 1e6 if row.size_bytes is not None else None, ".1f"),
            _num(row.size_bytes / reference_bytes if row.size_bytes is not None else None, ".3f"),
            _num(row.latency_ms, ".1f"), _num(row.fp32_latency_ms, ".1f"), _num(row.latency_ratio, ".2f"),
            _num(row.speedup, ".2f") + ("x" if row.speedup is not None else ""), _num(row.reload_diff, ".1e"),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _load() -> str:
    return "/".join(f"{value:.2f}" for value in os.getloadavg())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1, help="torch threads for training and timing")
    parser.add_argument("--repeats", type=int, default=10, help="timed rounds per pair (median reported)")
    parser.add_argument("--warmup", type=int, default=3, help="untimed rounds per pair")
    parser.add_argument("--steps", type=int, default=2, help="training steps of the training methods")
    parser.add_argument("--seq-len", type=int, default=128)
    parser.add_argument("--n-layer", type=int, default=12, help="GPT-2 small has 12; fewer for a quick check")
    parser.add_argument("--only", default=None, help="comma-separated method names (the fp32 reference always runs)")
    args = parser.parse_args(argv)
    if args.steps < 1 or args.repeats < 1 or args.warmup < 0 or args.threads < 1:
        raise ConfigError("--steps, --repeats and --threads must be >= 1 and --warmup >= 0.")
    only = None if args.only is None else {name.strip() for name in args.only.split(",")}
    # Library warnings (deprecations, sdpa notices) would bury the table in the log.
    warnings.filterwarnings("ignore")
    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()
    torch.set_num_threads(args.threads)

    command = " ".join(shlex.quote(a) for a in [sys.executable, *sys.argv])
    print(f"command: {command}")
    print(f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}; {hardware()}, torch {torch.__version__}, {torch.get_num_threads()} threads")
    print(f"load average (1/5/15 min) at start: {_load()}")
    print(f"GPT-2 small shape (n_layer={args.n_layer}), batch 1 x {args.seq_len}, {args.threads} thread(s), "
          f"warm-up {args.warmup}, median of {args.repeats} interleaved rounds per pair; "
          f"training methods: {args.steps} steps on {TRAIN_BATCH_SIZE} x {args.seq_len} random tokens", flush=True)

    torch.manual_seed(0)
    teacher = GPT2LMHeadModel(GPT2Config(n_layer=args.n_layer)).eval().requires_grad_(False)
    vocab = teacher.config.vocab_size
    generator = torch.Generator().manual_seed(0)
    inputs = {"input_ids": torch.randint(0, vocab, (1, args.seq_len), generator=generator)}
    batches = []
    for _ in range(TRAIN_BATCHES):
        ids = torch.randint(0, vocab, (TRAIN_BATCH_SIZE, args.seq_len), generator=generator)
        batches.append({"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": ids.clone()})

    work = Path(tempfile.mkdtemp(prefix="compbench_methods_bench_"))
    rows: list[Row] = []
    reference = None
    reference_bytes = 0
    reference_latencies: list[float] = []
    failures = 0
    try:
        for index, (name, label, cfg) in enumerate(method_configs(args.n_layer, only)):
            started = time.perf_counter()
            row = Row(label)
            rows.append(row)
            shorten_training(cfg, args.steps)
            try:
                method = build_method(cfg)
                row.eff_mode = method.eff_mode
                ctx = MethodContext(family="decoder", teacher=teacher, device=torch.device("cpu"), seed=0,
                                    teacher_available=True)
                reloaded = compress_and_reload(method, teacher, ctx, batches, inputs, work / f"export_{index}", row)
            except ConfigError as exc:
                if name == REFERENCE:
                    raise
                row.note = f"refused: {exc}"
                print(f"[{label}] {row.note}", flush=True)
                continue
            except Exception as exc:  # a bug in one method must not lose the other rows of a long run
                failures += 1
                row.note = f"FAILED: {type(exc).__name__}: {exc}".replace("\n", " ")[:300]
                traceback.print_exc()
                print(f"[{label}] {row.note}", flush=True)
                if name == REFERENCE:
                    raise
                continue
            if name == REFERENCE:
                reference, reference_bytes = reloaded, row.size_bytes
                continue  # timed below, in every pair
            time_pair(reference, reloaded, inputs, args, row)
            reference_latencies.append(row.fp32_latency_ms)
            del reloaded
            shutil.rmtree(work / f"export_{index}", ignore_errors=True)
            gc.collect()
            phases = ", ".join(f"{phase} {seconds:.1f}s" for phase, seconds in row.seconds.items())
            print(f"[{label}] {row.size_bytes / 1e6:.1f} MB, {row.latency_ms:.1f} ms "
                  f"vs fp32 {row.fp32_latency_ms:.1f} ms, reload max|d| {row.reload_diff:.1e}; {phases}; "
                  f"total {time.perf_counter() - started:.1f}s; load {_load()}", flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)

    reference_row = rows[0]
    if reference_latencies:
        # The reference was timed in every pair; its row shows the median of those medians.
        reference_row.latency_ms = reference_row.fp32_latency_ms = statistics.median(reference_latencies)
        reference_row.latency_ratio = reference_row.speedup = 1.0
    print()
    print(markdown_table(rows, reference_bytes))
    print()
    if reference_latencies:
        print(f"fp32 p50 across pairs: min {min(reference_latencies):.1f} ms, max {max(reference_latencies):.1f} ms")
    print(f"load average (1/5/15 min) at end: {_load()}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
