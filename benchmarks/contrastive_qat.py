"""Training-time overhead per step of ``contrastive_qat`` over plain ``qat`` (same bits, same data).

Usage::

    OMP_NUM_THREADS=1 python benchmarks/contrastive_qat.py [--steps 20] [--batch 8] [--seq-len 128]
        [--n-layer 4] [--n-embd 256] [--vocab 50257] [--device cpu|cuda]

A GPT-2-shaped model (``--n-layer`` x ``--n-embd``, GPT-2's vocabulary by default) with random
weights is the teacher; each variant trains its own copy at W-E-A 2-2-8. One step is exactly what
the LightningModule does: student forward (hidden states if the method asks), teacher forward
under ``no_grad``, ``training_loss``, backward, AdamW step, ``on_train_step``. The variants are
stepped interleaved on the same batch (so machine load hits them alike), after ``--warmup``
untimed steps each; the figure is the ratio of median step times within this one run. The paper
(Tao et al., 2022) reports about +10% training time for its contrastive distillation.
"""

from __future__ import annotations

import argparse
import copy
import statistics
import time

import torch
from transformers import GPT2Config, GPT2LMHeadModel

from compbench.methods.base import Method, MethodContext, method_training_step
from compbench.methods.contrastive_qat import ContrastiveQAT
from compbench.methods.qat import QAT


def variants(max_steps: int) -> dict[str, Method]:
    bits = dict(w_bits=2, e_bits=2, a_bits=8, max_steps=max_steps)
    return {
        "qat (pact, logit KD)": QAT(quantizer="pact", **bits),
        "contrastive_qat (full)": ContrastiveQAT(**bits),
        "  ablation: contrastive only": ContrastiveQAT(dynamic_scaling=False, **bits),
        "  ablation: dynamic scaling only": ContrastiveQAT(contrastive=False, **bits),
    }


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=20, help="timed steps per variant")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--seq-len", type=int, default=128)
    parser.add_argument("--n-layer", type=int, default=4)
    parser.add_argument("--n-embd", type=int, default=256)
    parser.add_argument("--vocab", type=int, default=50257, help="GPT-2's vocabulary size by default")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    torch.manual_seed(0)
    config = GPT2Config(n_layer=args.n_layer, n_embd=args.n_embd, n_head=max(1, args.n_embd // 64),
                        vocab_size=args.vocab, n_positions=max(args.seq_len, 128))
    teacher = GPT2LMHeadModel(config).eval().requires_grad_(False).to(device)
    ctx = MethodContext(family="decoder", teacher=teacher, device=device)
    total_steps = args.warmup + args.steps
    generator = torch.Generator().manual_seed(0)
    batches = []
    for _ in range(4):  # a few distinct batches, cycled: the memory bank sees new and known tokens
        ids = torch.randint(0, args.vocab, (args.batch, args.seq_len), generator=generator).to(device)
        batches.append({"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": ids.clone()})

    runs = {}
    for label, method in variants(total_steps).items():
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
    base = medians["qat (pact, logit KD)"]
    device_name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"cpu, {args.threads} thread(s)"
    print(f"GPT-2 shape {args.n_layer} layers x {args.n_embd} hidden, vocab {args.vocab}, batch {args.batch} x "
          f"{args.seq_len}, W-E-A 2-2-8, {device_name}; median of {args.steps} interleaved steps "
          f"after {args.warmup} warm-up")
    print(f"{'variant':34s} {'step ms':>9s} {'vs qat':>8s}")
    for label, median in medians.items():
        print(f"{label:34s} {median * 1e3:9.1f} {median / base:7.3f}x")
    print(f"contrastive_qat / qat step-time ratio: {medians['contrastive_qat (full)'] / base:.3f}")


if __name__ == "__main__":
    main()
