"""The evaluation stage: quality, calibration, robustness and efficiency of one model.

Every run, baseline or compressed, goes through ``evaluate_all`` so every row has all four
metric groups. Costs are bounded by config (``evaluation.*``): robustness and OOD evaluation can
be capped to ``max_examples`` test examples, latency to ``repeats`` rounds.
"""

from __future__ import annotations

import logging
import math
import time
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig

from compbench.configs import build_dataclass, to_dict
from compbench.metrics.calibration import (
    CalibrationAccumulator,
    LogitReservoir,
    calibration_metrics,
    temperature_scaled_metrics,
)
from compbench.metrics.efficiency import (
    bits_per_param, compile_for_timing, count_parameters, measure_latency, peak_memory_mb,
)
from compbench.metrics.registry import spec_for
from compbench.metrics.robustness import example_rng, parse_perturbations, robustness_summary
from compbench.tasks.base import Task

log = logging.getLogger(__name__)



def quality_and_calibration(task: Task, model: torch.nn.Module, run_dir: Path, cfg: DictConfig) -> dict[str, Any]:
    """Test quality and calibration in one pass; temperature fitted on dev tokens first."""
    calib = cfg.calibration
    if not calib.enabled:
        return task.evaluate(model, run_dir, "test")
    temperature = 1.0
    row: dict[str, Any] = {}
    if calib.temperature_scaling:
        reservoir = LogitReservoir(max_tokens=int(calib.max_dev_tokens), seed=0)
        task.dev_logits(model, reservoir.add)
        temperature = reservoir.fit_temperature()
    raw, scaled = CalibrationAccumulator(), CalibrationAccumulator(temperature=temperature)

    def on_logits(logits: torch.Tensor, labels: torch.Tensor, log_probs: torch.Tensor | None = None) -> None:
        raw.update(logits, labels, log_probs=log_probs)  # the LM task's log-softmax, reused
        scaled.update(logits, labels)

    row.update(task.evaluate(model, run_dir, "test", on_logits))
    row.update(calibration_metrics(raw, n_bins=int(calib.n_bins)))
    if calib.temperature_scaling:
        row.update(temperature_scaled_metrics(scaled, n_bins=int(calib.n_bins)))
    raw.save(run_dir / "calibration.npz")
    return row


def robustness(task: Task, model: torch.nn.Module, clean: dict[str, Any], cfg: DictConfig) -> dict[str, Any]:
    """The main metric under each seeded perturbation of the test inputs, and the drops (on the
    task's ``robust_drop`` metric: the relative change of the main metric, or for language models
    the increase of the NLL in nats)."""
    rob = cfg.robustness
    if not rob.enabled or not rob.perturbations:
        return {}
    perturbations = parse_perturbations(to_dict({"p": rob.perturbations})["p"])
    examples = task.splits["test"]
    if rob.max_examples is not None:
        examples = examples[: int(rob.max_examples)]
    capped = len(examples) < len(task.splits["test"])
    baseline = task.with_test_examples(examples, "clean, capped") if capped else task
    clean_scores = baseline.evaluate(model, None, "test") if baseline is not task else clean
    drop_metric, drop_kind = task.robust_drop or (task.main_metric, "relative")
    scores = {}
    for p in perturbations:
        perturbed = [task.perturb_example(ex, p, example_rng(int(rob.seed), p.id, i)) for i, ex in enumerate(examples)]
        result = task.with_test_examples(perturbed, f"perturbation {p.id}").evaluate(model, None, "test")
        scores[p.id] = {m: result[m] for m in {task.main_metric, drop_metric}}
        log.debug("Robustness %s: %s=%.4f", p.id, task.main_metric, scores[p.id][task.main_metric])
    spec = spec_for(drop_metric)
    row = robustness_summary(clean_scores, scores, drop_metric, bool(spec.higher_is_better), drop_kind)
    log.info("Robustness: %d perturbations of %d test examples, mean drop %.3f (%s of %s)",
             len(perturbations), len(examples), row.get("robust.mean_drop", float("nan")), drop_kind, drop_metric)
    # The clean scores the drops are relative to: on the same (possibly capped) test examples.
    for metric in {task.main_metric, drop_metric}:
        row[f"robust.clean.{metric.split('.', 1)[1]}"] = clean_scores[metric]
    return row


def out_of_distribution(task: Task, model: torch.nn.Module, cfg: DictConfig, task_cfg: DictConfig) -> dict[str, Any]:
    """The main quality metric on other test sets (e.g. other MasakhaNER languages: zero-shot).

    ``evaluation.ood`` maps a name to task-config overrides (``{yor: {lang: yor, data_dir: ...}}``);
    the model is evaluated on each one's test split with this run's tokenizer and labels.
    """
    if not cfg.ood:
        return {}
    row: dict[str, Any] = {}
    scores: list[float] = []
    main = task.main_metric.split(".", 1)[1]
    for name, overrides in to_dict(cfg.ood).items():
        other_cfg = {**to_dict(task_cfg), **(overrides or {})}
        if "labels" in other_cfg and getattr(task, "labels", None) is not None:
            other_cfg["labels"] = list(task.labels)  # keep label ids identical to the trained head
        other = build_dataclass(other_cfg, "task")
        other.load()
        test = other.splits["test"]
        if cfg.robustness.max_examples is not None:
            test = test[: int(cfg.robustness.max_examples)]
        score = task.with_test_examples(test, f"OOD {name}").evaluate(model, None, "test")[task.main_metric]
        row[f"robust.ood.{name}.{main}"] = score
        scores.append(score)
        log.info("OOD %s: %s=%.4f", name, task.main_metric, score)
    row[f"robust.ood.mean_{main}"] = sum(scores) / len(scores)
    return row


def latency_inputs(model: torch.nn.Module, family: str, seq_len: int):
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


def efficiency(model: torch.nn.Module, baseline: torch.nn.Module, family: str, size_bytes: int,
               cfg: DictConfig) -> dict[str, Any]:
    """Parameter counts, bits per parameter, latency vs the fp32 baseline (timed interleaved), memory."""
    eff = cfg.efficiency
    counts = count_parameters(model)
    row: dict[str, Any] = {**counts, **bits_per_param(size_bytes, counts["eff.params"])}
    if not eff.enabled:
        return row
    limit = getattr(model.config, "n_positions", None) or getattr(model.config, "max_position_embeddings", None)
    seq_len = min(int(eff.seq_len), int(limit) - 2 if limit else int(eff.seq_len))
    make_inputs = latency_inputs(model, family, seq_len)
    batch_sizes = (1, int(eff.batch_size))
    timed = {"baseline": baseline, "compressed": model}
    compiled = bool(cfg.get("compile", False))
    if compiled:  # both compiled, so the ratio compares compiled with compiled; compile time kept apart
        timed, compile_s = compile_for_timing(timed, make_inputs, batch_sizes, threads=eff.threads)
        row["eff.compile_time_s"] = compile_s["compressed"]
    timings = measure_latency(
        timed, make_inputs, batch_sizes=batch_sizes, warmup=int(eff.warmup), repeats=int(eff.repeats),
        threads=eff.threads, baseline="baseline",
    )
    row.update(timings["compressed"])
    row["eff.compiled"] = compiled
    row.update(peak_memory_mb(model, make_inputs(1)))
    row["eff.seq_len"] = seq_len
    return row


def evaluate_all(task: Task, model: torch.nn.Module, baseline: torch.nn.Module, family: str, size_bytes: int,
                 run_dir: Path, cfg: DictConfig, task_cfg: DictConfig) -> dict[str, Any]:
    """All four metric groups for ``model`` (the compressed model, as reloaded from its export)."""
    start = time.time()
    row = quality_and_calibration(task, model, run_dir, cfg)
    row.update(robustness(task, model, row, cfg))
    row.update(out_of_distribution(task, model, cfg, task_cfg))
    row.update(efficiency(model, baseline, family, size_bytes, cfg))
    row["eff.eval_time_s"] = time.time() - start
    bad = [k for k, v in row.items() if isinstance(v, float) and not math.isfinite(v)]
    if bad:
        log.warning("Non-finite metrics: %s", ", ".join(bad))
    return row
