"""How training-step and evaluation-forward time grow with sequence length and width (``scaling``)."""

from __future__ import annotations

import copy
from typing import Any

import torch

from compbench.bench.fixtures import gpt2_config, lm_batches, training_settings
from compbench.bench.timing import interleaved, loglog_slope, medians, threads


def bench_scaling(args) -> dict[str, Any]:
    """Training-step (plain step through ``method_training_step``: forward, loss, backward,
    AdamW) and evaluation-forward (``inference_mode``) time vs sequence length at width 768 and
    vs width at 128 tokens, batch 1, one thread, GPT-2 blocks with GPT-2's vocabulary (``n_layer``
    reduced to keep the run affordable: the per-layer and LM-head terms are both visible). All
    points of a sweep are timed interleaved; slopes are least-squares fits of log(time) on
    log(size): ~1 = linear, ~2 = quadratic (attention's score matrix grows with seq_len^2,
    matmuls with width^2, the LM head with width)."""
    from transformers import GPT2LMHeadModel

    from compbench.methods.lifecycle import PlainTraining
    from compbench.methods.none import NoCompression

    n_layer = 1 if args.quick else 2
    vocab = 5000 if args.quick else 50257
    seqs = [128, 256, 512] if args.quick else [128, 256, 512, 1024]
    widths = [128, 256, 384] if args.quick else [256, 512, 768, 1024]
    base_width = 128 if args.quick else 768
    settings = training_settings()
    out: dict[str, Any] = {"description": bench_scaling.__doc__, "n_layer": n_layer, "vocab_size": vocab}
    for axis, points in (("seq_len", seqs), ("width", widths)):
        fns_train, fns_eval = {}, {}
        for p in points:
            seq, width = (p, base_width) if axis == "seq_len" else (128, p)
            torch.manual_seed(0)
            config = gpt2_config(False, n_layer=n_layer, n_embd=width, n_head=width // 64 if width >= 64 else 1,
                                 vocab_size=vocab, n_positions=max(1024, seq))
            model = GPT2LMHeadModel(config)
            batch = lm_batches(vocab, 1, seq, n=1)[0]
            loop = PlainTraining([batch], lr=1e-4, steps=10**6, schedule=True, **settings)
            fns_train[str(p)] = loop.start(model, NoCompression()).step
            eval_model = copy.deepcopy(model).eval()

            def ev(m=eval_model, b=batch):
                with torch.inference_mode():
                    m(input_ids=b["input_ids"], attention_mask=b["attention_mask"])
            fns_eval[str(p)] = ev
        res = {}
        for kind, fns in (("train_step", fns_train), ("eval_forward", fns_eval)):
            with threads(1):
                times = interleaved(fns, args.rounds, warmup=1)
            med = medians(times)
            first = str(points[0])
            res[kind] = {"seconds": times, "median_s": med,
                         "ratio_vs_first": {k: v / med[first] for k, v in med.items()},
                         "loglog_slope": loglog_slope([float(k) for k in med], list(med.values())),
                         "loglog_slope_last_two": loglog_slope([float(k) for k in list(med)[-2:]], list(med.values())[-2:])}
        out[axis] = {"points": points, **res}
    s = out["seq_len"]["train_step"]["loglog_slope"]
    out["headline"] = {"name": "train-step time vs seq_len, log-log slope", "value": s, "target": "(descriptive)",
                       "met": None}
    return out
