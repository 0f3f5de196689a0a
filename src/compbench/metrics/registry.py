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


# Quality metrics known to the foundation; the metric modules register theirs on import.
register("quality.f1", True, ("token_classification",), "entity-level micro F1 (seqeval)")
register("quality.precision", True, ("token_classification",), "entity-level micro precision (seqeval)")
register("quality.recall", True, ("token_classification",), "entity-level micro recall (seqeval)")
register("quality.f1_*", True, ("token_classification",), "entity-level F1 of one entity type (seqeval)")
register("quality.ppl", False, ("causal_lm",), "perplexity, sliding window (see task config)")
register("quality.nll", False, ("causal_lm",), "mean token negative log-likelihood (nats)")
register("quality.token_accuracy", True, ("causal_lm",), "next-token top-1 accuracy")
register("quality.rouge1", True, ("summarization",), "ROUGE-1 F-measure (rouge-score, stemmed)")
register("quality.rouge2", True, ("summarization",), "ROUGE-2 F-measure (rouge-score, stemmed)")
register("quality.rougeL", True, ("summarization",), "ROUGE-L F-measure (rouge-score, stemmed)")
register("eff.params", False, description="parameters of the compressed model (structurally present)")
register("eff.size_mb", False, description="size of the exported model files on disk, MB (10^6 bytes)")
register("eff.compression_ratio", True, description="fp32 size of the uncompressed model / eff.size_mb")
register("eff.mode", None, description="how latency was obtained: dense, fake-quant or real-kernel")
