"""The metric registry: each metric column is registered once with its metadata.

The reporting layer reads ``higher_is_better`` and ``group`` from here to sort tables and mark
the best value, instead of hard-coding metric names. Columns with a variable part (per-type F1,
one column per perturbation) are registered as ``fnmatch`` patterns, e.g. ``quality.f1_*``.
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass

GROUPS = ("quality", "calib", "robust", "eff")
TASK_KINDS = ("token_classification", "causal_lm", "summarization")
ALL_KINDS = TASK_KINDS


@dataclass(frozen=True)
class MetricSpec:
    """Metadata of one results column (or a pattern of columns).

    Attributes:
        column: full column name or fnmatch pattern, e.g. ``quality.f1`` or ``robust.*.f1``.
        group: one of ``quality``, ``calib``, ``robust``, ``eff``.
        higher_is_better: True/False, or None where "better" is not defined (e.g. ``eff.mode``).
        task_kinds: the task kinds the metric applies to.
        description: one line, shown in reports.
    """

    column: str
    group: str
    higher_is_better: bool | None
    task_kinds: tuple[str, ...] = ALL_KINDS
    description: str = ""


_REGISTRY: dict[str, MetricSpec] = {}


def register(
    column: str,
    higher_is_better: bool | None,
    task_kinds: tuple[str, ...] = ALL_KINDS,
    description: str = "",
) -> MetricSpec:
    """Register a metric column; the group is its prefix. Re-registering must not change it."""
    group = column.split(".", 1)[0]
    if group not in GROUPS:
        raise ValueError(f"metric column {column!r} must start with one of {GROUPS}")
    unknown = set(task_kinds) - set(TASK_KINDS)
    if unknown:
        raise ValueError(f"metric {column!r}: unknown task kinds {sorted(unknown)}")
    spec = MetricSpec(column, group, higher_is_better, tuple(task_kinds), description)
    existing = _REGISTRY.get(column)
    if existing is not None and existing != spec:
        raise ValueError(f"metric {column!r} is already registered differently: {existing}")
    _REGISTRY[column] = spec
    return spec


def spec_for(column: str) -> MetricSpec | None:
    """The spec of a column: an exact registration first, else the longest matching pattern."""
    if column in _REGISTRY:
        return _REGISTRY[column]
    matches = [s for pat, s in _REGISTRY.items() if fnmatch.fnmatchcase(column, pat)]
    return max(matches, key=lambda s: len(s.column)) if matches else None


def registered(group: str | None = None, task_kind: str | None = None) -> list[MetricSpec]:
    """All registered specs, optionally filtered by group and task kind."""
    return [
        s
        for s in _REGISTRY.values()
        if (group is None or s.group == group) and (task_kind is None or task_kind in s.task_kinds)
    ]


# Every column is registered here, in one torch-free module, so that reports and notebooks get
# all metadata without importing the metric implementations.

# ---- quality (compbench.tasks)
register("quality.f1", True, ("token_classification",), "entity-level micro F1 (seqeval)")
register("quality.precision", True, ("token_classification",), "entity-level micro precision (seqeval)")
register("quality.recall", True, ("token_classification",), "entity-level micro recall (seqeval)")
register("quality.f1_*", True, ("token_classification",), "entity-level F1 of one entity type (seqeval)")
register("quality.ppl", False, ("causal_lm",), "perplexity, sliding window (see task config)")
register("quality.nll", False, ("causal_lm",), "mean token negative log-likelihood (nats)")
register("quality.token_accuracy", True, ("causal_lm",), "next-token top-1 accuracy")
register("quality.ppl_protocol", None, ("causal_lm",), "how quality.ppl was computed: per_document or joined_stream (task.ppl_protocol)")
register("quality.rouge1", True, ("summarization",), "ROUGE-1 F-measure (rouge-score, stemmed)")
register("quality.rouge2", True, ("summarization",), "ROUGE-2 F-measure (rouge-score, stemmed)")
register("quality.rougeL", True, ("summarization",), "ROUGE-L F-measure (rouge-score, stemmed)")
register("quality.ext.*", None, description="an evaluation.extra_metrics value (HF evaluate, from saved predictions)")
register("quality.rougeLsum", True, ("summarization",), "ROUGE-Lsum F-measure over Punkt-split sentences (rouge-score, stemmed)")

# ---- efficiency (compbench.metrics.efficiency, compbench.training.pipeline)
register("eff.params", False, description="parameters of the compressed model (structurally present)")
register("eff.size_mb", False, description="size of the exported model files on disk, MB (10^6 bytes)")
register("eff.compression_ratio", True, description="fp32 size of the uncompressed model / eff.size_mb")
register("eff.mode", None, description="how latency was obtained: dense, fake-quant or real-kernel")
register("eff.nonzero_params", False, description="parameters of the compressed model that are not zero")
register("eff.bits_per_param", False, description="8 x exported bytes / eff.params (storage cost incl. overheads)")
register("eff.latency_ms_p50", False, description="median forward latency at batch 1, ms (interleaved timing)")
register("eff.latency_ms_p90", False, description="90th-percentile forward latency at batch 1, ms")
register("eff.latency_ms_p50_b*", False, description="median forward latency at batch B, ms")
register("eff.latency_ms_p90_b*", False, description="90th-percentile forward latency at batch B, ms")
register("eff.throughput", True, description="samples per second at the largest timed batch (B / median latency)")
register("eff.latency_ratio", False, description="median batch-1 latency / the baseline's, timed interleaved")
register("eff.speedup", True, description="baseline median batch-1 latency / this model's (1 / eff.latency_ratio)")
register("eff.threads", None, description="torch intra-op threads used for the latency measurement")
register("eff.batch_size", None, description="the largest batch size timed (the one eff.throughput uses)")
register("eff.peak_mem_mb", False, description="model tensors + peak extra memory of one forward, MB (10^6 B)")
register("eff.forward_mem_mb", False, description="peak memory allocated during one forward on top of the model, MB")

# ---- calibration (compbench.metrics.calibration)
register("calib.ece", False, description="expected calibration error, equal-width confidence bins (top-1)")
register("calib.ece_mass", False, description="expected calibration error, equal-mass confidence bins (top-1)")
register("calib.mce", False, description="maximum calibration error over non-empty equal-width bins (top-1)")
register("calib.brier", False, description="multi-class Brier score sum_k (p_k - y_k)^2, mean over tokens (0..2)")
register("calib.nll", False, description="mean negative log-likelihood of the label (nats)")
register("calib.confidence", None, description="mean top-1 confidence")
register("calib.accuracy", True, description="top-1 accuracy of the positions scored for calibration")
register("calib.ece_ts", False, description="calib.ece after temperature scaling fitted on dev tokens")
register("calib.nll_ts", False, description="calib.nll after temperature scaling fitted on dev tokens")
register("calib.temperature", None, description="temperature fitted on dev tokens (NLL, LBFGS on log T)")

# ---- robustness (compbench.metrics.robustness, compbench.training.evaluation)
_NER = ("token_classification",)
for _metric in ("f1", "precision", "recall", "f1_*"):
    register(f"robust.*.{_metric}", True, _NER, f"{_metric} on the perturbed test set (seqeval)")
register("robust.*.ppl", False, ("causal_lm",), "perplexity on the perturbed test set")
register("robust.*.nll", False, ("causal_lm",), "mean token NLL on the perturbed test set")
register("robust.*.token_accuracy", True, ("causal_lm",), "next-token accuracy on the perturbed test set")
for _metric in ("rouge1", "rouge2", "rougeL", "rougeLsum"):
    register(f"robust.*.{_metric}", True, ("summarization",), f"{_metric} on the perturbed inputs")
register("robust.*.drop", False, description="relative drop of the main metric under one perturbation (+ = worse); "
         "causal_lm: increase of the mean token NLL in nats (= ln of the perplexity ratio)")
register("robust.mean_drop", False, description="mean of robust.*.drop over perturbations (+ = worse)")
register("robust.ood.*", None, description="quality metric on an out-of-distribution test set (e.g. another language)")
register("robust.ood.*.f1", True, ("token_classification",), "entity F1 on another language's test set (zero-shot)")
register("robust.ood.*.ppl", False, ("causal_lm",), "perplexity on a second corpus")
register("robust.ood.mean_f1", True, ("token_classification",), "mean entity F1 over the out-of-distribution sets")
register("robust.ood.mean_ppl", False, ("causal_lm",), "mean perplexity over the out-of-distribution sets")
register("robust.ood.mean_rougeL", True, ("summarization",), "mean ROUGE-L over the out-of-distribution sets")
register("eff.eval_time_s", False, description="wall time of the whole evaluation stage, s")
register("eff.seq_len", None, description="sequence length of the latency inputs")
register("eff.device", None, description="device the model was evaluated and timed on (cpu or cuda)")
register("eff.train_time_s", False, description="wall time of the method chain (prepare, training, finalize), s")
register("eff.train_steps", None, description="compression-training steps run (this attempt, if resumed)")
register("eff.train_step_ms", False, description="median wall time of one compression-training step, ms")
register("eff.teacher_train_time_s", None, description="wall time the teacher's fine-tuning took (cached teachers: when trained), s")
register("eff.compiled", None, description="whether the latency was timed on torch.compile'd models (evaluation.compile)")
register("eff.compile_time_s", False, description="torch.compile time of the compressed model (first call per batch size), s; not in the latency")
