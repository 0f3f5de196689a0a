"""Result tables: select runs, average over seeds, differences from the baseline, best values.

The table *model* (which runs, which groups, mean ± std and ``n`` per cell, the difference from
the uncompressed baseline, which cell is best) is built here; rendering uses the libraries:
``tabulate`` for Markdown, pandas' ``Styler`` (jinja2) for LaTeX and HTML, pandas for CSV. What
they cannot do is kept here: ``mean ± std`` cells, ``n`` per cell, bold chosen per (task, model)
and footers that list failed runs and missing baselines.
"""

from __future__ import annotations

import difflib
import fnmatch
import html
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from compbench.metrics import registry
from compbench.records.schema import CONFIG_COLUMNS, METHOD_PREFIX, METRIC_PREFIXES, order_columns
from compbench.reporting.numbers import column_decimals, fixed, format_number
from compbench.reporting.summary import LEGACY_MAIN_METRICS

FORMATS = ("markdown", "latex", "html", "csv")
#: Columns shown before the metrics in a one-line-per-run table (``--runs``).
DEFAULT_ROW_COLUMNS = ("run_id", *CONFIG_COLUMNS)
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
        if not _is_numeric(runs[metric]):
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


def _is_numeric(series: pd.Series) -> bool:
    return pd.api.types.is_numeric_dtype(series) and not pd.api.types.is_bool_dtype(series)


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
    table = Table(header=list(columns), numeric=[_is_numeric(frame[c]) for c in columns])
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
    numeric = {c: _is_numeric(frame[c]) for c in values}
    table = Table(header=[*group_by, "n", *values],
                  numeric=[_is_numeric(frame[c]) for c in group_by] + [True] + [numeric[c] for c in values])
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


# ------------------------------------------------------------------------------ renderers
def _frames(table: Table, bold_marker: tuple[str, str] | None = None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(display strings, bold mask) as DataFrames over the table's header."""
    text, bold = [], []
    for row in table.rows:
        text.append([(bold_marker[0] + c.display() + bold_marker[1]) if bold_marker and c.bold and c.text
                     else c.display() for c in row])
        bold.append([c.bold and bool(c.text) for c in row])
    columns = pd.RangeIndex(len(table.header))
    return pd.DataFrame(text, columns=columns), pd.DataFrame(bold, columns=columns)


def render_markdown_table(table: Table) -> str:
    """A GitHub-flavoured Markdown pipe table (``tabulate``), numbers right-aligned, best in bold."""
    from tabulate import tabulate

    text, _ = _frames(table, ("**", "**"))
    body = tabulate(
        text.values.tolist(), headers=table.header, tablefmt="github", disable_numparse=True,
        colalign=["right" if n else "left" for n in table.numeric],
    )
    return (f"**{table.title}**\n\n" if table.title else "") + body


def _styler(table: Table, escape: str):
    text, bold = _frames(table)
    text.columns = table.header
    bold.columns = table.header
    styles = bold.replace({True: "font-weight: bold;", False: ""}).infer_objects()
    styler = text.style.hide(axis="index").apply(lambda _: styles, axis=None)
    return styler.format(escape=escape).format_index(escape=escape, axis=1)


def render_latex_table(table: Table) -> str:
    """A booktabs ``tabular`` (pandas ``Styler.to_latex``; ``\\usepackage{booktabs}``), best in bold."""
    spec = "".join("r" if n else "l" for n in table.numeric)
    latex = _styler(table, "latex").to_latex(hrules=True, convert_css=True, column_format=spec)
    # Unicode signs as math, so the table compiles with any LaTeX engine.
    latex = latex.replace("±", r"$\pm$").replace("Δ", r"$\Delta$")
    return (f"% {table.title}\n" if table.title else "") + latex.rstrip("\n")


def render_html_table(table: Table) -> str:
    """An HTML ``<table>`` (pandas ``Styler.to_html``) with the best cells bold, and a caption."""
    styler = _styler(table, "html").set_table_attributes('class="compbench-table"')
    if table.title:
        styler = styler.set_caption(html.escape(table.title))
    return styler.to_html().rstrip("\n")


def render_csv_tables(tables: Sequence[Table]) -> str:
    """Raw numbers at full precision (grouped: ``<col>_mean``, ``<col>_std``, ``<col>_n``), no bold.

    Several tables (one per task) are stacked into one CSV over the union of their columns.
    """
    raws = [t.raw if t.raw is not None else pd.DataFrame(columns=t.header) for t in tables]
    raw = pd.concat(raws, ignore_index=True, sort=False) if len(raws) > 1 else raws[0]
    return raw.to_csv(index=False, float_format=None, lineterminator="\n").rstrip("\n")


def render_report(report: Report, fmt: str = "markdown") -> str:
    """Render the tables and the footer notes in one of ``FORMATS``.

    Markdown notes are a list under the tables, LaTeX notes ``%`` comments, HTML notes a
    ``<ul class="notes">``; CSV carries the numbers only (notes go to stderr in the CLI).
    """
    if fmt not in FORMATS:
        raise ReportError(f"unknown format {fmt!r}; choose one of {', '.join(FORMATS)}.")
    if fmt == "csv":
        return render_csv_tables(report.tables)
    if fmt == "markdown":
        body = "\n\n".join(render_markdown_table(t) for t in report.tables)
        return body + ("\n\n" + "\n".join(f"- {n}" for n in report.notes) if report.notes else "")
    if fmt == "latex":
        body = "\n\n".join(render_latex_table(t) for t in report.tables)
        return body + ("\n" + "\n".join(f"% {n}" for n in report.notes) if report.notes else "")
    body = "\n".join(render_html_table(t) for t in report.tables)
    notes = "".join(f"<li>{html.escape(n)}</li>" for n in report.notes)
    return body + (f'\n<ul class="notes">{notes}</ul>' if notes else "")


def render(table: Table, fmt: str = "markdown") -> str:
    """Render one table (no notes) in one of ``FORMATS``."""
    return render_report(Report([table]), fmt)


def render_run(row: dict[str, Any], exact: bool = False) -> str:
    """One run vertically: ``column  value`` lines, missing and empty values left out.

    Floats are rounded to ``DIGITS`` significant digits (``exact``: full precision, ``repr``).
    """
    shown = [(c, v) for c, v in row.items() if v is not None and v != ""]
    width = max(len(c) for c, _ in shown)

    def text(column: str, value: Any) -> str:
        if not isinstance(value, float):
            return str(value)
        if exact or math.isnan(value) or not column.startswith((*METRIC_PREFIXES, "duration_s")):
            return repr(value)  # config values as written (5e-05, 0.2); NaN as nan
        return format_number(value)

    return "\n".join(f"{column.ljust(width)}  {text(column, value)}" for column, value in shown)
