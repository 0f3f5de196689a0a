"""Overheads of compbench's own machinery against a plain PyTorch equivalent: the training step
(the LightningModule vs ``methods.lifecycle.PlainTraining``, the deliberately plain loop) and the
evaluation pass (``task.evaluate`` with the calibration accumulators vs a bare loop)."""

from __future__ import annotations

import copy
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from compbench.bench.fixtures import compose_config, gpt2_config, lm_batches, lm_task, training_settings
from compbench.bench.timing import interleaved, medians, ratio, threads


def bench_train_overhead(args) -> dict[str, Any]:
    """Lightning step vs plain loop, interleaved step by step inside one ``trainer.fit``.

    A callback runs one plain-loop step (on its own copy of the model, same batch) at the end of
    every Lightning step and times it; the Lightning step is the time between consecutive
    ``on_train_batch_start`` calls minus that plain step, so it includes everything Lightning and
    the module do per step (data fetch, ``training_step`` with ``method_training_step``, logging,
    backward, AdamW, scheduler, ``on_train_step``). The trainer is the pipeline's
    (``make_trainer`` with the default trainer config and a CSV logger, as a default run has);
    rolling checkpoints are off (every 50 steps in a real run: amortised, not per step). The plain
    loop clips gradients to the trainer's ``gradient_clip_val`` as Lightning does, so both do the
    same training. ``fixed_overhead_ms`` = difference of the medians.
    """
    import lightning as L
    from lightning.pytorch.loggers import CSVLogger
    from transformers import GPT2LMHeadModel

    from compbench.training.module import CompressionModule
    from compbench.training.trainer import make_trainer

    from compbench.methods.lifecycle import PlainTraining
    from compbench.methods.none import NoCompression

    cfg = compose_config(["logger=csv", "trainer.enable_progress_bar=false", "trainer.enable_model_summary=false"])
    settings = training_settings()
    shapes = {"tiny": dict(n_layer=2, n_embd=64, n_head=2, vocab_size=2000)}
    if not args.quick:
        shapes["gpt2_small"] = {}
    else:
        shapes["small_quick"] = dict(n_layer=2, n_embd=128, n_head=2, vocab_size=5000)
    # Steps of a 124M model take seconds and swing with the machine's load: 11 rounds at least.
    warmup, rounds = 2, max(args.rounds, 11) if not args.quick else args.rounds
    results = {}
    for shape, overrides in shapes.items():
        torch.manual_seed(0)
        config = gpt2_config(False, **overrides)
        model = GPT2LMHeadModel(config)
        steps = warmup + rounds + 1  # the last step is dropped (its interval includes fit's teardown)
        batches = lm_batches(config.vocab_size, 1, 128, n=steps)
        # The plain loop clips gradients like the trainer config does (same training, not a feature gap).
        plain = PlainTraining(batches, lr=5e-5, steps=steps, schedule=True, clip=cfg.trainer.gradient_clip_val,
                              **settings).start(copy.deepcopy(model), NoCompression())
        module = CompressionModule(model, lr=5e-5, max_steps=steps, **settings)
        starts: list[float] = []
        plain_times: list[float] = []

        class Interleave(L.Callback):
            def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
                starts.append(time.perf_counter())

            def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
                start = time.perf_counter()
                plain.step()  # the same batch: both loops take batches[batch_idx]
                plain_times.append(time.perf_counter() - start)

        with tempfile.TemporaryDirectory() as tmp, threads(1):
            trainer = make_trainer(cfg, Path(tmp), "bench", steps, 10**9,
                                   loggers=[CSVLogger(tmp, name="bench")])
            trainer.callbacks.append(Interleave())
            loader = torch.utils.data.DataLoader(batches, batch_size=None)
            trainer.fit(module, train_dataloaders=loader)
            end = time.perf_counter()
        starts.append(end)  # the last step ends when fit returns (teardown included: conservative)
        lightning = [starts[i + 1] - starts[i] - plain_times[i] for i in range(len(plain_times))]
        times = {"compbench_lightning": lightning[warmup:-1], "plain_pytorch": plain_times[warmup:-1]}
        results[shape] = {"config": config.to_diff_dict() | {"batch": 1, "seq_len": 128, "threads": 1},
                          "seconds": times, "median_s": medians(times),
                          "fixed_overhead_ms": 1e3 * (statistics.median(times["compbench_lightning"])
                                                      - statistics.median(times["plain_pytorch"])),
                          **ratio(times, "compbench_lightning", "plain_pytorch")}
    main_shape = "gpt2_small" if "gpt2_small" in results else "small_quick"
    profile = profile_lightning_steps(cfg, steps=20 if args.quick else 60)
    return {"description": bench_train_overhead.__doc__, "shapes": results, "rounds": rounds,
            "profile_tiny_lightning_fit": profile,
            "headline": {"name": f"train step overhead ({main_shape})", "value": results[main_shape]["ratio"],
                         "target": "<= 1.05", "met": results[main_shape]["ratio"] <= 1.05}}


def profile_lightning_steps(cfg, steps: int) -> dict[str, Any]:
    """cProfile of a Lightning fit of the tiny shape: where the per-step time goes.

    Returns the per-step milliseconds of the top functions by own time (``tottime``) and of a few
    landmarks by cumulative time (the model forward, backward, optimizer step, ``self.log``), so
    the fixed overhead per step can be attributed. cProfile inflates Python-heavy code, so these
    are shares, not timings to compare with the unprofiled ratio.
    """
    import cProfile
    import pstats

    from lightning.pytorch.loggers import CSVLogger
    from transformers import GPT2LMHeadModel

    from compbench.training.module import CompressionModule
    from compbench.training.trainer import make_trainer

    torch.manual_seed(0)
    config = gpt2_config(False, n_layer=2, n_embd=64, n_head=2, vocab_size=2000)
    batches = lm_batches(config.vocab_size, 1, 128, n=steps)
    module = CompressionModule(GPT2LMHeadModel(config), lr=5e-5, max_steps=steps, **training_settings())
    profiler = cProfile.Profile()
    with tempfile.TemporaryDirectory() as tmp, threads(1):
        trainer = make_trainer(cfg, Path(tmp), "profile", steps, 10**9, loggers=[CSVLogger(tmp, name="p")])
        loader = torch.utils.data.DataLoader(batches, batch_size=None)
        profiler.enable()
        trainer.fit(module, train_dataloaders=loader)
        profiler.disable()
    stats = pstats.Stats(profiler).stats  # (file, line, name) -> (cc, nc, tottime, cumtime, callers)
    total = sum(v[2] for v in stats.values())

    def label(key):
        path, line, name = key
        return f"{'/'.join(Path(path).parts[-3:])}:{line}({name})"

    top = sorted(stats.items(), key=lambda kv: kv[1][2], reverse=True)[:20]
    landmarks = {"method_training_step": "method_training_step", "backward": "run_backward",
                 "optimizer.step (incl. closure)": "step", "LightningModule.log": "log",
                 "clip_grad_norm_": "clip_grad_norm_", "apply_to_collection": "_apply_to_collection_slow"}
    marks = {}
    for title, fname in landmarks.items():
        hits = [v[3] for k, v in stats.items() if k[2] == fname or (k[0] == "~" and f"'{fname}'" in k[2])]
        marks[title] = 1e3 * max(hits, default=0.0) / steps
    return {"steps": steps, "profiled_ms_per_step": 1e3 * total / steps,
            "cumulative_ms_per_step": marks,
            "top_tottime_ms_per_step": {label(k): 1e3 * v[2] / steps for k, v in top}}


def bench_eval_overhead(args) -> dict[str, Any]:
    """compbench's quality pass vs a bare ``inference_mode`` loop over the same batches.

    compbench: ``task.evaluate(model, run_dir, "test", on_logits)`` with the two calibration
    accumulators ``quality_and_calibration`` feeds (raw and temperature-scaled), on the smoke LM
    task (sliding windows of 128 tokens); bare: ``model(input_ids, attention_mask)`` on every
    batch of ``task.dataloader("test")`` (the same loader, so batching costs the same) under
    ``torch.inference_mode()``, nothing else. The
    temperature fit is a separate pass over dev tokens and is not part of this figure.
    """
    from transformers import GPT2LMHeadModel

    from compbench.metrics.calibration import CalibrationAccumulator

    with tempfile.TemporaryDirectory() as tmp:
        task, tokenizer = lm_task(128, 8, 8, Path(tmp))
        torch.manual_seed(0)
        config = gpt2_config(args.quick, vocab_size=max(len(tokenizer), 2000) if args.quick else 50257)
        model = GPT2LMHeadModel(config).eval()
        batches = list(task.dataloader("test"))
        run_dir = Path(tmp)

        def compbench_pass():
            raw, scaled = CalibrationAccumulator(), CalibrationAccumulator(temperature=1.3)

            def on_logits(logits, labels, log_probs=None):
                raw.update(logits, labels, log_probs=log_probs)
                scaled.update(logits, labels)

            task.evaluate(model, run_dir, "test", on_logits)

        def bare_pass():
            with torch.inference_mode():
                for batch in task.dataloader("test"):
                    model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])

        with threads(1):
            times = interleaved({"compbench_evaluate": compbench_pass, "bare_inference_mode": bare_pass},
                                args.rounds, warmup=1)
    r = ratio(times, "compbench_evaluate", "bare_inference_mode")
    return {"description": bench_eval_overhead.__doc__,
            "config": config.to_diff_dict() | {"batches": len(batches), "batch_shapes": [list(b["input_ids"].shape) for b in batches],
                                               "threads": 1},
            "seconds": times, "median_s": medians(times), **r,
            "headline": {"name": "evaluation pass overhead", "value": r["ratio"], "target": "<= 1.10",
                         "met": r["ratio"] <= 1.10}}
