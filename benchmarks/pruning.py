"""Export size and CPU latency of pruned GPT-2-small-shaped models, relative to fp32 dense.

Usage::

    OMP_NUM_THREADS=1 python benchmarks/pruning.py [--threads 1] [--rounds 10] [--seq-len 128]

The model is ``GPT2LMHeadModel(GPT2Config())`` with random weights (no hub access); sizes and
latencies do not depend on the weight values. Every variant is pruned, finalized and exported
with its method's own ``export``, then reloaded with ``load_export`` (and checked against the
in-memory logits). Size = bytes on disk of the export (``artifact_size_bytes``); the reference is
the dense model's ``save_pretrained`` safetensors. Latency = median of ``--rounds`` forward
passes (batch 1 x seq-len, ``no_grad``), the variants timed interleaved round by round so that
load on the shared machine hits them alike; ratios are taken within this one run.
"""

from __future__ import annotations

import argparse
import copy
import statistics
import tempfile
import time
from pathlib import Path

import torch
from transformers import GPT2Config, GPT2LMHeadModel

from compbench.methods.base import MethodContext
from compbench.methods.export import artifact_size_bytes, load_export
from compbench.methods.prune_magnitude import MagnitudePruning
from compbench.methods.prune_structured import StructuredPruning


def variants() -> dict[str, object]:
    return {
        "magnitude 50%": MagnitudePruning(sparsity=0.5),
        "magnitude 80%": MagnitudePruning(sparsity=0.8),
        "magnitude 95%": MagnitudePruning(sparsity=0.95),
        "magnitude 80% +emb": MagnitudePruning(sparsity=0.8, include_embeddings=True, include_head=True),
        "structured 50% heads+50% FFN": StructuredPruning(head_sparsity=0.5, ffn_sparsity=0.5),
        "structured drop half the layers": StructuredPruning(drop_layers="keep_every_k", k=2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--seq-len", type=int, default=128)
    parser.add_argument("--n-layer", type=int, default=12, help="GPT-2 small has 12; fewer for a quick check")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    dense = GPT2LMHeadModel(GPT2Config(n_layer=args.n_layer)).eval()
    ctx = MethodContext(family="decoder")
    ids = torch.randint(0, dense.config.vocab_size, (1, args.seq_len))

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        dense.save_pretrained(tmp / "dense")
        dense_bytes = artifact_size_bytes(tmp / "dense")
        models, rows = {"dense fp32": dense}, {"dense fp32": (dense_bytes, sum(p.numel() for p in dense.parameters()))}
        for label, method in variants().items():
            method.check(ctx)
            model = method.finalize(method.prepare(copy.deepcopy(dense), ctx), ctx).eval()
            out_dir = tmp / label.replace(" ", "_").replace("%", "").replace("+", "")
            manifest = method.export(model, out_dir, ctx)
            reloaded = load_export(out_dir)
            with torch.no_grad():
                diff = float((reloaded(input_ids=ids[:, :16]).logits - model(input_ids=ids[:, :16]).logits).abs().max())
            del reloaded
            models[label] = model
            rows[label] = (manifest["size_bytes"], sum(p.numel() for p in model.parameters()), diff)

        times = {label: [] for label in models}
        with torch.no_grad():
            for model in models.values():  # warm-up
                model(input_ids=ids)
            for _ in range(args.rounds):
                for label, model in models.items():
                    start = time.perf_counter()
                    model(input_ids=ids)
                    times[label].append(time.perf_counter() - start)

    base_latency = statistics.median(times["dense fp32"])
    print(f"GPT-2 small shape (n_layer={args.n_layer}), batch 1 x {args.seq_len}, threads={args.threads}, "
          f"median of {args.rounds} interleaved rounds")
    print(f"{'variant':34s} {'params':>11s} {'size MB':>9s} {'size ratio':>10s} {'latency ms':>10s} "
          f"{'lat ratio':>9s} {'reload diff':>11s}")
    for label, row in rows.items():
        size, params = row[0], row[1]
        diff = f"{row[2]:.1e}" if len(row) > 2 else "-"
        latency = statistics.median(times[label])
        print(f"{label:34s} {params:11,d} {size / 1e6:9.1f} {dense_bytes / size:9.2f}x {latency * 1e3:10.1f} "
              f"{base_latency / latency:8.2f}x {diff:>11s}")


if __name__ == "__main__":
    main()
