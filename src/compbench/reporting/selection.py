"""Which runs and columns a report shows: the metric registry's directions, the main quality
metric, column patterns, ``--where`` filters, debug runs, the default grouping and columns, and
the differences from the uncompressed baseline (``--delta``). Tables are built from this in
``tables.py``; rendered in ``render.py``."""

from __future__ import annotations

import difflib
import fnmatch
import math
import re
from collections.abc import Sequence
from typing import Any

import pandas as pd

from compbench.metrics import registry
from compbench.records.schema import METHOD_PREFIX, METRIC_PREFIXES, order_columns
from compbench.reporting.summary import LEGACY_MAIN_METRICS

#: The default columns after the main quality metric (issue 8: one headline per metric group).
HEADLINE_METRICS = ("calib.ece", "robust.mean_drop", "eff.size_mb", "eff.speedup")
#: The config columns a default table groups by (seeds are averaged).
CONFIG_KEYS = ("model", "task", "lang", "method")
#: Row column marking runs made with a debug config (``debug=fast``); reports leave them out.
DEBUG_COLUMN = "debug"
#: Prefixes of the difference columns added by ``--delta``.
DELTA, DELTA_REL = "Δ ", "Δ% "

_WHERE = re.compile(r"^\s*(?P<column>[^=!<>]+?)\s*(?P<op>!=|>=|<=|=|>|<)\s*(?P<value>.*?)\s*$")


class ReportError(ValueError):
    """A report request that cannot be served (unknown column, bad filter): one sentence."""


def is_numeric(series: pd.Series) -> bool:
    """Numbers, not booleans (a bool column is a flag, not a metric)."""
    return pd.api.types.is_numeric_dtype(series) and not pd.api.types.is_bool_dtype(series)


# ------------------------------------------------------------------------------ registry
def higher_is_better(column: str) -> bool | None:
    """The registry's direction for a metric column; None when unknown or undefined."""
    spec = registry.spec_for(column)
    return spec.higher_is_better if spec is not None else None


def main_metrics(frame: pd.DataFrame) -> list[str]:
    """The main quality columns of ``frame``'s runs that hold values: what their ``main_metric``
    column names (``Task.main_metric``), and for rows stored before that column existed
    ``LEGACY_MAIN_METRICS``."""
    named = frame["main_metric"] if "main_metric" in frame.columns else pd.Series([None] * len(frame), dtype=object)
    present = named.notna() & (named.astype(str) != "")
    candidates = list(dict.fromkeys(named[present].astype(str)))
    if not present.all():
        candidates += [m for m in LEGACY_MAIN_METRICS if m not in candidates]
    return [c for c in candidates if c in frame.columns and frame[c].notna().any()]


def main_metric(frame: pd.DataFrame) -> str | None:
    """The main quality metric of ``frame``'s runs (one task's: the first of :func:`main_metrics`;
    one row's: ``summary.row_main_metric``)."""
    return next(iter(main_metrics(frame)), None)


# ------------------------------------------------------------------------------ selection
def _unknown_column(name: str, known: Sequence[str]) -> ReportError:
    close = difflib.get_close_matches(name, list(known), n=1)
    hint = f"; did you mean {close[0]!r}?" if close else "; `compbench-report show RUN_ID` lists a run's columns."
    return ReportError(f"unknown column {name!r}{hint}")


def resolve_columns(frame: pd.DataFrame, patterns: Sequence[str]) -> list[str]:
    """Column names or fnmatch patterns (``quality.*``) -> existing columns, in request order."""
    out: list[str] = []
    for pattern in patterns:
        if pattern in frame.columns:
            matched = [pattern]
        else:
            matched = order_columns(c for c in frame.columns if fnmatch.fnmatchcase(c, pattern))
        if not matched:
            raise _unknown_column(pattern, frame.columns)
        out.extend(c for c in matched if c not in out)
    return out


def _typed_value(series: pd.Series, column: str, text: str) -> Any:
    if pd.api.types.is_bool_dtype(series) or (
        series.dtype == object and series.dropna().map(type).eq(bool).all() and series.notna().any()
    ):
        lowered = text.lower()
        if lowered in ("true", "1"):
            return True
        if lowered in ("false", "0"):
            return False
        raise ReportError(f"column {column!r} holds true/false, so {text!r} cannot be compared with it.")
    if pd.api.types.is_numeric_dtype(series):
        try:
            return float(text)
        except ValueError:
            raise ReportError(f"column {column!r} is numeric, so {text!r} cannot be compared with it.") from None
    return text


def clause_column(clause: str) -> str | None:
    """The column a filter clause tests, or None when the clause cannot be read."""
    match = _WHERE.match(clause)
    return match["column"] if match else None


def filter_rows(frame: pd.DataFrame, clauses: Sequence[str]) -> pd.DataFrame:
    """Keep the rows matching every clause.

    A clause is ``column OP value`` with OP one of ``= != > >= < <=``; ``=``/``!=`` take a
    comma-separated list of values (``method=kd,none``); an empty value matches an empty or
    missing cell (``lang=``).
    """
    mask = pd.Series(True, index=frame.index)
    for clause in clauses:
        match = _WHERE.match(clause)
        if match is None:
            raise ReportError(f"cannot read the filter {clause!r}; write it as column=value (or != > >= < <=).")
        column, op, value = match["column"], match["op"], match["value"]
        if column not in frame.columns:
            raise _unknown_column(column, frame.columns)
        series = frame[column]
        if op in ("=", "!="):
            hit = pd.Series(False, index=frame.index)
            for item in value.split(","):
                item = item.strip()
                if item == "":
                    hit |= series.isna() | (series.astype(str) == "")
                else:
                    hit |= (series == _typed_value(series, column, item)).fillna(False).astype(bool)
            mask &= hit if op == "=" else ~hit
        else:
            if not pd.api.types.is_numeric_dtype(series) or pd.api.types.is_bool_dtype(series):
                raise ReportError(f"column {column!r} is not numeric, so it cannot be compared with {op}.")
            bound = _typed_value(series, column, value)
            compare = {">": series.gt, ">=": series.ge, "<": series.lt, "<=": series.le}[op]
            mask &= compare(bound).fillna(False).astype(bool)
    return frame[mask]


def is_debug(frame: pd.DataFrame) -> pd.Series:
    """Which runs were made with a debug config (a truthy ``debug`` column; absent: none)."""
    if DEBUG_COLUMN not in frame.columns:
        return pd.Series(False, index=frame.index)
    values = frame[DEBUG_COLUMN]
    text = values.astype(str).str.strip().str.lower()
    return values.notna() & ~text.isin(("", "0", "0.0", "false", "none", "nan", "no"))


def drop_debug(frame: pd.DataFrame) -> tuple[pd.DataFrame, int]:
    """``frame`` without debug runs, and how many were left out."""
    debug = is_debug(frame)
    return frame[~debug], int(debug.sum())


def metric_columns(frame: pd.DataFrame) -> list[str]:
    """Metric columns holding at least one value, in row order."""
    return [c for c in order_columns(frame.columns) if c.startswith(METRIC_PREFIXES) and frame[c].notna().any()]


def varying_method_params(frame: pd.DataFrame) -> list[str]:
    """``method.*`` columns that take more than one value within one method (a swept parameter)."""
    params = [c for c in order_columns(frame.columns) if c.startswith(METHOD_PREFIX)]
    if "method" not in frame.columns:
        return []
    out = []
    for column in params:
        per_method = frame.groupby("method", dropna=False)[column].nunique(dropna=False)
        if (per_method > 1).any():
            out.append(column)
    return out


def default_group_by(frame: pd.DataFrame) -> list[str]:
    """Model, task, language, method and each swept method parameter: seeds are averaged."""
    return [c for c in CONFIG_KEYS if c in frame.columns] + varying_method_params(frame)


def default_columns(frame: pd.DataFrame) -> list[str]:
    """The headline columns of one task's runs: main quality metric, ECE, robustness drop,
    size and speed-up (those with values)."""
    main = main_metric(frame)
    wanted = ([main] if main else []) + list(HEADLINE_METRICS)
    return [c for c in wanted if c in frame.columns and frame[c].notna().any()]


# ------------------------------------------------------------------------------ baseline differences
def baseline_rows(frame: pd.DataFrame) -> dict[str, pd.Series]:
    """The uncompressed baseline of each teacher: its latest ok ``method=none`` run."""
    if not {"method", "teacher_hash", "status"} <= set(frame.columns):
        return {}
    none = frame[(frame["method"] == "none") & (frame["status"] == "ok") & frame["teacher_hash"].notna()]
    if "started_at" in none.columns:
        none = none.sort_values("started_at", kind="stable", na_position="first")
    return {str(h): row for h, row in none.groupby("teacher_hash").tail(1).set_index("teacher_hash").iterrows()}


def add_deltas(runs: pd.DataFrame, metrics: Sequence[str], baselines: dict[str, pd.Series]) -> tuple[pd.DataFrame, list[str]]:
    """Add ``Δ <metric>`` (run − baseline) and ``Δ% <metric>`` (100 × Δ / |baseline|) per run.

    The baseline of a run is the ``method=none`` run with the same ``teacher_hash`` (same model,
    task, data, seed and fine-tuning): paired differences, averaged over seeds afterwards.

    Returns:
        the runs with the difference columns, and the new column names in display order.
    """
    runs = runs.copy()
    added = []
    hashes = runs["teacher_hash"].astype(object) if "teacher_hash" in runs.columns else pd.Series(None, index=runs.index)
    for metric in metrics:
        if not is_numeric(runs[metric]):
            continue
        base = pd.Series(
            [float(baselines[str(h)][metric]) if str(h) in baselines and metric in baselines[str(h)] and
             pd.notna(baselines[str(h)][metric]) else math.nan for h in hashes],
            index=runs.index, dtype=float,
        )
        diff = runs[metric].astype(float) - base
        runs[DELTA + metric] = diff
        runs[DELTA_REL + metric] = 100.0 * diff / base.abs().where(base != 0)
        added += [DELTA + metric, DELTA_REL + metric]
    return runs, added


def missing_baseline_notes(runs: pd.DataFrame, baselines: dict[str, pd.Series]) -> list[str]:
    """One line per teacher of ``runs`` without a ``method=none`` run, naming the command."""
    notes = []
    if "teacher_hash" not in runs.columns:
        return ["no teacher_hash column in the store, so no run has a baseline; Δ columns are empty."]
    no_hash = runs[runs["teacher_hash"].isna() | (runs["teacher_hash"].astype(str) == "")]
    if len(no_hash):
        notes.append(f"{len(no_hash)} run(s) record no teacher_hash (they failed before the teacher), so they have no baseline.")
    for teacher, group in runs.dropna(subset=["teacher_hash"]).groupby("teacher_hash", sort=True):
        if str(teacher) in baselines or str(teacher) == "":
            continue
        first = group.iloc[0]
        ident = [f"model={first.get('model')}", f"task={first.get('task')}"]
        if isinstance(first.get("lang"), str) and first.get("lang"):
            ident.append(f"task.lang={first['lang']}")
        if pd.notna(first.get("seed")):
            ident.append(f"seed={int(first['seed'])}")
        command = ident + (["debug=fast"] if bool(is_debug(group.iloc[:1]).iloc[0]) else [])
        notes.append(
            f"no method=none baseline for teacher {teacher} ({', '.join(ident)}; {len(group)} run(s)): "
            f"their Δ cells are empty; `compbench {' '.join(command)} method=none` "
            "(with the same fine-tuning settings) fills them."
        )
    return notes
