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

from compbench.configs import to_dict
from compbench.metrics.calibration import (
    CalibrationAccumulator,
    LogitReservoir,
    calibration_metrics,
    temperature_scaled_metrics,
)
from compbench.metrics.efficiency import efficiency_columns, evaluation_cost
from compbench.metrics.registry import spec_for
from compbench.metrics.robustness import example_rng, ood_columns, parse_perturbations, robustness_summary
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
    # The clean scores the drops are relative to (same, possibly capped, examples) go in the row too.
    row = robustness_summary(clean_scores, scores, drop_metric, bool(spec.higher_is_better), drop_kind,
                             clean_metrics=sorted({task.main_metric, drop_metric}))
    log.info("Robustness: %d perturbations of %d test examples, mean drop %.3f (%s of %s)",
             len(perturbations), len(examples), row.get("robust.mean_drop", float("nan")), drop_kind, drop_metric)
    return row


def out_of_distribution(task: Task, model: torch.nn.Module, cfg: DictConfig, ood_tasks: dict[str, Task]) -> dict[str, Any]:
    """The main quality metric on other test sets (e.g. other MasakhaNER languages: zero-shot).

    ``ood_tasks`` maps an ``evaluation.ood`` name to its task (``training.plan.build_ood_tasks``);
    the model is evaluated on each one's test split with this run's tokenizer and labels.
    """
    if not ood_tasks:
        return {}
    scores: dict[str, float] = {}
    for name, other in ood_tasks.items():
        if getattr(task, "labels", None) is not None and getattr(other, "labels", None) is not None:
            other.labels = list(task.labels)  # keep label ids identical to the trained head
        other.load()
        test = other.splits["test"]
        if cfg.robustness.max_examples is not None:
            test = test[: int(cfg.robustness.max_examples)]
        scores[name] = task.with_test_examples(test, f"OOD {name}").evaluate(model, None, "test")[task.main_metric]
        log.info("OOD %s: %s=%.4f", name, task.main_metric, scores[name])
    return ood_columns(scores, task.main_metric)


def efficiency(model: torch.nn.Module, baseline: torch.nn.Module, family: str, size_bytes: int,
               reference_bytes: int, eff_mode: str, cfg: DictConfig) -> dict[str, Any]:
    """The efficiency stage: every ``eff.*`` column of the evaluated model (sizes, counts, latency
    vs the fp32 baseline, memory), built by ``compbench.metrics.efficiency``."""
    return efficiency_columns(model, baseline, family, size_bytes=size_bytes, reference_bytes=reference_bytes,
                              mode=eff_mode, settings=to_dict(cfg.efficiency), compile=bool(cfg.get("compile", False)))


def evaluate_all(task: Task, model: torch.nn.Module, baseline: torch.nn.Module, family: str, run_dir: Path,
                 cfg: DictConfig, ood_tasks: dict[str, Task], *, size_bytes: int, reference_bytes: int,
                 eff_mode: str) -> dict[str, Any]:
    """All four metric groups for ``model`` (the compressed model, as reloaded from its export,
    on its evaluation device), given the out-of-distribution tasks, the export's
    size on disk, the fp32 teacher's (``reference_bytes``) and the method's ``eff_mode``."""
    start = time.time()
    row = quality_and_calibration(task, model, run_dir, cfg)
    row.update(robustness(task, model, row, cfg))
    row.update(out_of_distribution(task, model, cfg, ood_tasks))
    row.update(efficiency(model, baseline, family, size_bytes, reference_bytes, eff_mode, cfg))
    row.update(evaluation_cost(time.time() - start))
    bad = [k for k, v in row.items() if isinstance(v, float) and not math.isfinite(v)]
    if bad:
        log.warning("Non-finite metrics: %s", ", ".join(bad))
    return row
