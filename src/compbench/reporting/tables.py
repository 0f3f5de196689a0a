"""Result tables: the table *model* — which runs, which groups, mean ± std and ``n`` per cell,
the difference from the uncompressed baseline, which cell is best — built from the runs chosen by
``selection.py`` and rendered by ``render.py``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from compbench.records.schema import CONFIG_COLUMNS, METRIC_PREFIXES
from compbench.reporting.numbers import column_decimals, fixed, format_number
from compbench.reporting.selection import (
    DELTA,
    DELTA_REL,
    HEADLINE_METRICS,
    ReportError,
    add_deltas,
    baseline_rows,
    clause_column,
    default_columns,
    default_group_by,
    drop_debug,
    filter_rows,
    higher_is_better,
    is_numeric,
    main_metric,
    missing_baseline_notes,
    resolve_columns,
)

#: Columns shown before the metrics in a one-line-per-run table (``--runs``).
DEFAULT_ROW_COLUMNS = ("run_id", *CONFIG_COLUMNS)


# ------------------------------------------------------------------------------ table model
@dataclass
class Cell:
    """One displayed cell: its text, optional ``± std`` part, and whether it is the best.

    Numeric cells carry ``value`` (a mean when grouped) and ``std_value``; their text is set by
    ``format_columns`` with one number of decimals per column.
    """

    text: str
    std: str | None = None
    bold: bool = False
    value: float | None = None
    std_value: float | None = None
    suffix: str = ""  # e.g. " (n=2)" when fewer runs than the group's n have the value

    def display(self) -> str:
        return self.text + (f" ± {self.std}" if self.std else "") + self.suffix


@dataclass
class Table:
    """A render-ready table: header, cells, which columns are numeric (right-aligned)."""

    header: list[str]
    rows: list[list[Cell]] = field(default_factory=list)
    numeric: list[bool] = field(default_factory=list)
    #: Machine-readable version for ``--format csv`` (raw numbers, separate mean/std/n columns).
    raw: pd.DataFrame | None = None
    #: A heading above the table (``task smoke``), empty for none.
    title: str = ""
    #: Per row, the (task, model) its runs share, or None when they mix several: "best" is
    #: only chosen among rows of the same (task, model).
    context: list[tuple | None] = field(default_factory=list)


@dataclass
class Report:
    """Tables (one per task by default) and the footer notes (failed runs, missing baselines)."""

    tables: list[Table]
    notes: list[str] = field(default_factory=list)


def format_columns(table: Table, integer: Sequence[bool] = ()) -> None:
    """Set the text of numeric cells: mean and std with one number of decimals per column
    (none for the columns flagged ``integer``)."""
    for j in range(len(table.header)):
        column = [row[j] for row in table.rows]
        numbers = [c.value for c in column if c.value is not None]
        if not numbers:
            continue
        decimals = 0 if j < len(integer) and integer[j] else column_decimals(numbers)
        for cell in column:
            if cell.value is None:
                continue
            cell.text = fixed(cell.value, decimals)
            cell.std = fixed(cell.std_value, decimals) or None
            # "Best" compares what the reader sees: equal-looking values are ties.
            if decimals is not None and math.isfinite(cell.value):
                cell.value = float(cell.text)


def _key_text(value: Any) -> str:
    """A group key or config value as written in the config (``0.2``, not ``0.2000``)."""
    value = _python(value)
    if isinstance(value, float):
        return f"{value:g}"
    return format_number(value)


def _context(group: pd.DataFrame) -> tuple | None:
    keys = [c for c in ("task", "model") if c in group.columns]
    values = []
    for key in keys:
        distinct = group[key].dropna().unique()
        if len(distinct) > 1:
            return None
        values.append(distinct[0] if len(distinct) else None)
    return tuple(values)


def mark_best(table: Table) -> None:
    """Bold the best value of each metric column with a registered direction, comparing only
    rows of the same (task, model); a row mixing several is never bold.

    Values are compared as displayed (after ``format_columns``): equal-looking values are all
    bold; a lone value is not "best" of anything. Grouped tables compare means.
    """
    for j, column in enumerate(table.header):
        if column.startswith((DELTA, DELTA_REL)):
            continue
        direction = higher_is_better(column)
        if direction is None:
            continue
        by_context: dict[tuple, list[int]] = {}
        for i, context in enumerate(table.context or [()] * len(table.rows)):
            if context is not None:
                by_context.setdefault(context, []).append(i)
        for members in by_context.values():
            shown = {i: table.rows[i][j].value for i in members
                     if table.rows[i][j].value is not None and not math.isnan(table.rows[i][j].value)}
            if len(shown) < 2:
                continue
            best = max(shown.values()) if direction else min(shown.values())
            for i, value in shown.items():
                table.rows[i][j].bold = value == best


def run_table(frame: pd.DataFrame, columns: Sequence[str]) -> Table:
    """One line per run."""
    table = Table(header=list(columns), numeric=[is_numeric(frame[c]) for c in columns])
    for index, record in frame[list(columns)].iterrows():
        cells = []
        for column, numeric in zip(columns, table.numeric):
            value = record[column]
            number = float(value) if numeric and pd.notna(value) else None
            cells.append(Cell("" if numeric else _key_text(value), value=number))
        table.rows.append(cells)
        table.context.append(_context(frame.loc[[index]]))
    table.raw = frame[list(columns)].reset_index(drop=True)
    integer = [pd.api.types.is_integer_dtype(frame[c]) or (
        n and not c.startswith(METRIC_PREFIXES) and frame[c].dropna().map(float).map(float.is_integer).all())
        for c, n in zip(columns, table.numeric)]
    format_columns(table, integer)
    mark_best(table)
    return table


def _python(value: Any) -> Any:
    if value is None or (not isinstance(value, str) and pd.isna(value)):
        return None
    return value.item() if hasattr(value, "item") else value


def grouped_table(frame: pd.DataFrame, group_by: Sequence[str], columns: Sequence[str]) -> Table:
    """One line per group: ``n`` runs, numeric columns as mean ± std (sample std, ddof=1).

    A group of one run shows no ``± std`` (the std of one value is undefined; CSV leaves it
    empty). A numeric cell averaged over fewer runs than ``n`` (some runs lack the value) says
    so with ``(n=k)``; text columns list their distinct values.
    """
    values = [c for c in columns if c not in group_by]
    numeric = {c: is_numeric(frame[c]) for c in values}
    table = Table(header=[*group_by, "n", *values],
                  numeric=[is_numeric(frame[c]) for c in group_by] + [True] + [numeric[c] for c in values])
    raw_rows = []
    for keys, group in frame.groupby(list(group_by), dropna=False, sort=True):
        keys = keys if isinstance(keys, tuple) else (keys,)
        cells = [Cell(_key_text(k)) for k in keys]
        cells.append(Cell(str(len(group)), value=None))
        raw = dict(zip(group_by, keys), n=len(group))
        for column in values:
            series = group[column]
            if numeric[column]:
                count = int(series.notna().sum())
                mean = float(series.mean()) if count else math.nan
                std = float(series.std(ddof=1)) if count > 1 else math.nan
                partial = f" (n={count})" if count and count < len(group) else ""
                cells.append(Cell("", value=mean if count else None, std_value=None if math.isnan(std) else std,
                                  suffix=partial))
                raw[f"{column}_mean"], raw[f"{column}_std"], raw[f"{column}_n"] = mean, std, count
            else:
                distinct = sorted({str(v) for v in series.dropna()})
                cells.append(Cell("/".join(distinct)))
                raw[column] = "/".join(distinct)
        table.rows.append(cells)
        table.context.append(_context(group))
        raw_rows.append(raw)
    table.raw = pd.DataFrame(raw_rows)
    format_columns(table)
    mark_best(table)
    return table


def failed_notes(failed: pd.DataFrame) -> list[str]:
    """One line per failed run: ``run_id (model/task/method, seed): error``."""
    notes = []
    for _, row in failed.iterrows():
        config = "/".join(str(row[c]) for c in ("model", "task", "lang", "method") if c in row and isinstance(row[c], str) and row[c])
        seed = f", seed {int(row['seed'])}" if "seed" in row and pd.notna(row["seed"]) else ""
        error = row.get("error") or "no error recorded"
        notes.append(f"failed: {row['run_id']} ({config}{seed}): {error}")
    return notes


def build_report(
    frame: pd.DataFrame,
    where: Sequence[str] = (),
    columns: Sequence[str] | None = None,
    group_by: Sequence[str] | None = None,
    *,
    per_run: bool = False,
    delta: bool = False,
    include_failed: bool = False,
    include_debug: bool = False,
) -> Report:
    """Select runs and build the tables ``compbench-report table`` prints.

    Args:
        frame: all runs, e.g. ``ResultsStore.frame()``.
        where: filter clauses (see ``filter_rows``).
        columns: columns or patterns to show; default: per task, the main quality metric, ECE,
            mean robustness drop, size and speed-up (one table per task).
        group_by: columns to group by; default: model, task, lang, method and swept method
            parameters (seeds averaged: mean ± std, n).
        per_run: one line per run instead of groups.
        delta: add the difference of each shown metric from the ``method=none`` run of the
            same teacher (absolute and relative).
        include_failed: count failed runs in the table (they are always listed in the footer).
        include_debug: keep runs made with a debug config (left out by default).
    """
    if frame.empty:
        raise ReportError("the results store holds no runs yet; run an experiment first (e.g. `compbench`).")
    notes: list[str] = []
    selected = filter_rows(frame, where)
    if selected.empty:
        raise ReportError(f"no runs match {' '.join(where)}; loosen --where (see `compbench-report table --help`).")
    if not include_debug:
        kept, dropped = drop_debug(selected)
        if kept.empty:
            raise ReportError(f"all {dropped} matching runs are debug runs (debug=fast); pass --include-debug to report them.")
        if dropped:
            notes.append(f"{dropped} debug run(s) left out (--include-debug shows them).")
        selected = kept
    has_status = "status" in selected.columns
    status_filtered = "status" in {clause_column(w) for w in where}
    failed = selected[selected["status"] == "failed"] if has_status else selected.iloc[:0]
    shown = selected if include_failed or status_filtered or not has_status else selected[selected["status"] == "ok"]
    if shown.empty:
        raise ReportError(f"all {len(selected)} matching runs failed; `compbench-report table --all` lists them with their errors.")

    tasks = [shown] if columns or per_run or "task" not in shown.columns else \
        [group for _, group in shown.groupby("task", dropna=False, sort=True)]
    baselines = baseline_rows(frame) if delta else {}
    tables = []
    unmeasured: set[str] = set()
    for part in tasks:
        if columns:
            chosen = resolve_columns(part, columns)
        else:
            chosen = default_columns(part)
            wanted = [main_metric(part) or "quality"] + list(HEADLINE_METRICS)
            unmeasured |= {c for c in wanted if c not in chosen}
        if delta:
            part, added = add_deltas(part, [c for c in chosen if c.startswith(METRIC_PREFIXES)], baselines)
            chosen = chosen + added
        if per_run:
            ident = [c for c in DEFAULT_ROW_COLUMNS if c in part.columns and c not in chosen]
            table = run_table(part, ident + chosen)
        else:
            keys = resolve_columns(part, group_by) if group_by else default_group_by(part)
            table = grouped_table(part, keys, chosen)
        if len(tasks) > 1:
            table.title = f"task {part['task'].iloc[0]}"
        tables.append(table)
    if unmeasured:
        notes.append(f"not measured in these runs: {', '.join(sorted(unmeasured))}.")
    if delta:
        notes += missing_baseline_notes(shown, baselines)
    notes += failed_notes(failed)
    return Report(tables, notes)


def build_table(frame: pd.DataFrame, where: Sequence[str] = (), columns: Sequence[str] | None = None,
                group_by: Sequence[str] | None = None, **kwargs: Any) -> Table:
    """The first table of ``build_report`` (a single-task selection has one)."""
    return build_report(frame, where, columns, group_by, **kwargs).tables[0]
