"""``evaluation.extra_metrics``: any Hugging Face ``evaluate`` metric as extra ``quality.ext.*`` columns.

Each entry is a hub id (``"sacrebleu"``; fetched from the hub, so it needs the network) or the
path of a local metric script or folder (works offline), or a mapping ``{metric: <id or path>,
name: <column name>, kwargs: {...}}`` whose ``kwargs`` go to ``compute``. The metrics are loaded
when the run starts (a missing path, a missing ``evaluate`` package or an unreachable hub id
fails the run before any training), and computed at the end from the predictions the task saved
in the run directory (``Task.saved_predictions``): tag sequences for NER, strings for
summarization. Every numeric value of the result becomes ``quality.ext.<name>.<key>`` (nested
results flattened with ``.``); compbench's own quality columns are not touched. Their direction
is unknown to compbench, so reports do not mark a best value for them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from compbench.errors import ConfigError

PREFIX = "quality.ext"


@dataclass
class ExtraMetric:
    """A loaded ``evaluate`` metric and the column name it writes under."""

    name: str
    metric: Any
    kwargs: dict[str, Any] = field(default_factory=dict)


def _entry(spec: Any) -> tuple[str, str, dict[str, Any]]:
    if isinstance(spec, str):
        source, name, kwargs = spec, None, {}
    elif isinstance(spec, Mapping) and "metric" in spec:
        source, name, kwargs = str(spec["metric"]), spec.get("name"), dict(spec.get("kwargs") or {})
    else:
        raise ConfigError(
            f"evaluation.extra_metrics entry {spec!r} is neither a metric id/path nor a mapping with a 'metric' key."
        )
    local = Path(source).expanduser()
    looks_local = source.endswith(".py") or source.startswith((".", "/", "~")) or local.exists()
    if looks_local and not local.exists():
        raise ConfigError(f"evaluation.extra_metrics: no metric script at {source}; give an existing path or a hub id.")
    name = name or (local.stem if looks_local else source.rstrip("/").rsplit("/", 1)[-1])
    return str(local.resolve()) if looks_local else source, str(name), kwargs


def load_extra_metrics(specs: list[Any] | None, task: Any) -> list[ExtraMetric]:
    """Load every metric of ``evaluation.extra_metrics`` (empty: none); refuse what cannot work."""
    if not specs:
        return []
    if not task.has_saved_predictions:
        raise ConfigError(
            f"evaluation.extra_metrics needs saved text predictions, which the {task.kind} task does not write "
            "(its predictions are per-document NLLs); drop evaluation.extra_metrics for this task."
        )
    try:
        import evaluate
    except ImportError as exc:
        raise ConfigError("evaluation.extra_metrics needs the evaluate package: pip install 'compbench[evaluate]'.") from exc
    loaded, names = [], set()
    for spec in specs:
        source, name, kwargs = _entry(spec)
        if name in names:
            raise ConfigError(f"evaluation.extra_metrics names {name!r} twice; give one of them a 'name'.")
        names.add(name)
        try:
            metric = evaluate.load(source)
        except Exception as exc:  # evaluate raises many types (FileNotFoundError, ConnectionError, ...)
            raise ConfigError(f"evaluation.extra_metrics could not load {source!r} ({type(exc).__name__}: {exc}); "
                              "a hub id needs the network, a local script works offline.") from exc
        loaded.append(ExtraMetric(name, metric, kwargs))
    return loaded


def _flatten(prefix: str, value: Any, out: dict[str, float]) -> None:
    if isinstance(value, Mapping):
        for key, sub in value.items():
            _flatten(f"{prefix}.{key}", sub, out)
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        out[prefix] = float(value)
    elif hasattr(value, "item") and getattr(value, "size", 2) == 1:  # numpy scalars
        out[prefix] = float(value.item())


def extra_quality(metrics: list[ExtraMetric], predictions: list[Any], references: list[Any]) -> dict[str, float]:
    """``quality.ext.<name>.<key>`` for every numeric value each metric returns."""
    row: dict[str, float] = {}
    for extra in metrics:
        result = extra.metric.compute(predictions=predictions, references=references, **extra.kwargs)
        _flatten(f"{PREFIX}.{extra.name}", result or {}, row)
    return row
