"""Training-time overhead per step of ``contrastive_qat`` over plain ``qat`` (same bits, same data).

Usage::

    OMP_NUM_THREADS=1 python benchmarks/contrastive_qat.py [--shapes tiny_gpt2,gpt2-small] [--steps 10]
        [--batch 8] [--seq-len 512] [--ablations] [--device cpu|cuda]

Shapes: ``tiny_gpt2`` is ``conf/model/tiny_gpt2.yaml`` (2 layers x 64, 2 heads, vocabulary 2000);
``gpt2-small`` is ``GPT2Config()`` (12 layers x 768, 12 heads, vocabulary 50257). Each shape's
model with random weights (seed 0) is the teacher; each variant trains its own copy at W-E-A
2-2-8. One step is exactly what the LightningModule does (``method_training_step``: student
forward with the hidden states the method asks for, teacher forward under ``no_grad``,
``training_loss``; then backward, AdamW step, ``on_train_step``). The variants of one shape are
stepped interleaved on the same batches (so machine load hits them alike), after ``--warmup``
untimed steps each; the figure is the ratio of median step times within this one process.
The paper (Tao et al., 2022, Table 5) reports about +10% training time over plain QAT.

The script only uses the methods' public constructors, so it also measures older code
(``PYTHONPATH=<old checkout>/src``): parameters that code lacks are dropped with a note.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import os
import statistics
import time

import torch
from transformers import GPT2Config, GPT2LMHeadModel

from compbench.methods.base import Method, MethodContext, method_training_step
from compbench.methods.quantization.contrastive_qat import ContrastiveQAT
from compbench.methods.quantization.qat import QAT

SHAPES = {
    "tiny_gpt2": dict(n_layer=2, n_embd=64, n_head=2, vocab_size=2000),  # conf/model/tiny_gpt2.yaml
    "gpt2-small": dict(n_layer=12, n_embd=768, n_head=12, vocab_size=50257),  # GPT2Config() defaults
}
BASE = "qat (pact, logit KD)"
FULL = "contrastive_qat (defaults)"


def variants(max_steps: int, ablations: bool) -> dict[str, Method]:
    bits = dict(w_bits=2, e_bits=2, a_bits=8, max_steps=max_steps)
    out = {BASE: QAT(quantizer="pact", **bits), FULL: ContrastiveQAT(**bits)}
    if ablations:
        out["  ablation: contrastive=false"] = ContrastiveQAT(contrastive=False, **bits)
        out["  ablation: dynamic_scaling=false"] = ContrastiveQAT(dynamic_scaling=False, **bits)
        names = {f.name for f in dataclasses.fields(ContrastiveQAT)}
        if "negatives" in names:
            out["  negatives=vocabulary_random"] = ContrastiveQAT(negatives="vocabulary_random", **bits)
            out["  negative_source=student"] = ContrastiveQAT(negative_source="student", **bits)
    return out


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def bench_shape(name: str, args: argparse.Namespace, device: torch.device) -> float:
    """Time the variants on one shape; print the table; return the contrastive_qat / qat ratio."""
    shape = SHAPES[name]
    torch.manual_seed(0)
    config = GPT2Config(**shape, n_positions=max(args.seq_len, 128),
                        bos_token_id=shape["vocab_size"] - 1, eos_token_id=shape["vocab_size"] - 1)
    teacher = GPT2LMHeadModel(config).eval().requires_grad_(False).to(device)
    ctx = MethodContext(family="decoder", teacher=teacher, device=device)
    total_steps = args.warmup + args.steps
    generator = torch.Generator().manual_seed(0)
    batches = []
    for _ in range(4):  # a few distinct batches, cycled
        ids = torch.randint(0, shape["vocab_size"], (args.batch, args.seq_len), generator=generator).to(device)
        batches.append({"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": ids.clone()})

    runs = {}
    for label, method in variants(total_steps, args.ablations).items():
        method.check(ctx)
        model = method.prepare(copy.deepcopy(teacher).requires_grad_(True), ctx).train()
        groups = method.param_groups(model, method.learning_rate, 0.01)
        runs[label] = (method, model, torch.optim.AdamW(groups, lr=method.learning_rate))

    def step(method: Method, model: torch.nn.Module, optimizer: torch.optim.Optimizer, index: int) -> float:
        batch = batches[index % len(batches)]
        _sync(device)
        start = time.perf_counter()
        loss, _, _ = method_training_step(method, model, teacher, batch)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        method.on_train_step(model, index + 1, total_steps)
        _sync(device)
        return time.perf_counter() - start

    times: dict[str, list[float]] = {label: [] for label in runs}
    for index in range(total_steps):
        for label, (method, model, optimizer) in runs.items():
            elapsed = step(method, model, optimizer, index)
            if index >= args.warmup:
                times[label].append(elapsed)

    medians = {label: statistics.median(values) for label, values in times.items()}
    base = medians[BASE]
    device_name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"cpu, {args.threads} thread(s)"
    print(f"\n{name}: {shape['n_layer']} layers x {shape['n_embd']} hidden, vocab {shape['vocab_size']}, batch "
          f"{args.batch} x {args.seq_len}, W-E-A 2-2-8, {device_name}; median of {args.steps} interleaved steps "
          f"after {args.warmup} warm-up")
    print(f"{'variant':36s} {'step ms':>9s} {'vs qat':>8s}")
    for label, median in medians.items():
        print(f"{label:36s} {median * 1e3:9.1f} {median / base:7.3f}x")
    ratio = medians[FULL] / base
    print(f"{name}: contrastive_qat / qat step-time ratio: {ratio:.3f}")
    return ratio


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shapes", default="tiny_gpt2,gpt2-small", help=f"comma list of {', '.join(SHAPES)}")
    parser.add_argument("--steps", type=int, default=10, help="timed steps per variant")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--seq-len", type=int, default=512)
    parser.add_argument("--ablations", action="store_true", help="also time the ablation variants")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    print(f"load average before: {os.getloadavg()}")
    ratios = {name: bench_shape(name, args, device) for name in args.shapes.split(",")}
    print(f"\nload average after: {os.getloadavg()}")
    for name, ratio in ratios.items():
        print(f"{name}: contrastive_qat / qat = {ratio:.3f}")


if __name__ == "__main__":
    main()
