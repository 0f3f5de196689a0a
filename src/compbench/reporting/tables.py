"""Result tables: filter runs, average over seeds, mark the best value, render Markdown/LaTeX/CSV.

The renderers are written here rather than with ``DataFrame.to_markdown``/``to_latex`` because
those need ``tabulate``/``jinja2`` (not compbench dependencies) and cannot bold one cell per
column or print ``mean ± std`` cells.
"""

from __future__ import annotations

import csv
import difflib
import fnmatch
import io
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from compbench.metrics import registry
from compbench.records.schema import CONFIG_COLUMNS, METRIC_PREFIXES, order_columns

FORMATS = ("markdown", "latex", "csv")
#: Columns shown before the metrics when ``columns`` is not given and rows are not grouped.
DEFAULT_ROW_COLUMNS = ("run_id", *CONFIG_COLUMNS)
#: Significant digits of displayed numbers (enough to tell F1 0.8123 from 0.8127).
DIGITS = 4

_WHERE = re.compile(r"^\s*(?P<column>[^=!<>]+?)\s*(?P<op>!=|>=|<=|=|>|<)\s*(?P<value>.*?)\s*$")


class ReportError(ValueError):
    """A report request that cannot be served (unknown column, bad filter): one sentence."""


# ------------------------------------------------------------------------------ registry


def higher_is_better(column: str) -> bool | None:
    """The registry's direction for a metric column; None when unknown or undefined."""
    spec = registry.spec_for(column)
    return spec.higher_is_better if spec is not None else None


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
                    hit |= series == _typed_value(series, column, item)
            mask &= hit.fillna(False) if op == "=" else ~hit.fillna(False)
        else:
            if not pd.api.types.is_numeric_dtype(series) or pd.api.types.is_bool_dtype(series):
                raise ReportError(f"column {column!r} is not numeric, so it cannot be compared with {op}.")
            bound = _typed_value(series, column, value)
            compare = {">": series.gt, ">=": series.ge, "<": series.lt, "<=": series.le}[op]
            mask &= compare(bound).fillna(False)
    return frame[mask]


def metric_columns(frame: pd.DataFrame) -> list[str]:
    """Metric columns holding at least one value, in row order."""
    return [c for c in order_columns(frame.columns) if c.startswith(METRIC_PREFIXES) and frame[c].notna().any()]


# ------------------------------------------------------------------------------ table model
@dataclass
class Cell:
    """One displayed cell: its text, optional ``± std`` part, and whether it is the best."""

    text: str
    std: str | None = None
    bold: bool = False
    value: float | None = None  # the number compared for "best" (a mean when grouped)


@dataclass
class Table:
    """A rendered-ready table: header, cells, and which columns are numeric (right-aligned)."""

    header: list[str]
    rows: list[list[Cell]] = field(default_factory=list)
    numeric: list[bool] = field(default_factory=list)
    #: Machine-readable version for ``--format csv`` (raw numbers, separate mean/std columns).
    raw: pd.DataFrame | None = None


def format_number(value: Any, digits: int = DIGITS) -> str:
    """``DIGITS`` significant digits without exponent for everyday magnitudes; ints as they are.

    0.812345 -> 0.8123, 35.2139 -> 35.21, 11.0 -> 11.00, 123456.7 -> 123457, 1e-05 -> 1.000e-05.
    """
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return str(value)
    if math.isinf(value):
        return "inf" if value > 0 else "-inf"
    if isinstance(value, int):
        return str(value)
    magnitude = abs(value)
    if magnitude < 1e-3:
        return f"{value:.{digits - 1}e}"
    return f"{value:.{_decimals(value, digits)}f}"


def _decimals(value: float, digits: int) -> int:
    if value == 0 or not math.isfinite(value):
        return 0
    return max(0, digits - 1 - math.floor(math.log10(abs(value))))


def _format_std(std: float, mean_text: str) -> str:
    """The std with as many decimals as the displayed mean, so that ``mean ± std`` lines up."""
    if math.isnan(std):
        return ""
    if "e" in mean_text or not math.isfinite(std):
        return format_number(std)
    decimals = len(mean_text.split(".")[1]) if "." in mean_text else 0
    return f"{std:.{decimals}f}"


def _displayed(value: float) -> float:
    """``value`` rounded as ``format_number`` shows it, so that ties on screen are ties here."""
    if not math.isfinite(value) or value == 0:
        return value
    return float(f"{value:.{DIGITS}g}")


def _is_numeric(series: pd.Series) -> bool:
    return pd.api.types.is_numeric_dtype(series) and not pd.api.types.is_bool_dtype(series)


def _mark_best(table: Table, columns: Sequence[str]) -> None:
    """Bold the best value of each metric column with a registered direction.

    Values are compared as displayed (``DIGITS`` significant digits): equal-looking values
    are all bold. Group columns compare means.
    """
    for j, column in enumerate(columns):
        direction = higher_is_better(column)
        if direction is None:
            continue
        shown = [None if row[j].value is None else _displayed(row[j].value) for row in table.rows]
        finite = [v for v in shown if v is not None and not math.isnan(v)]
        if len(finite) < 2:  # a lone value is not "best" of anything
            continue
        best = max(finite) if direction else min(finite)
        for row, value in zip(table.rows, shown):
            row[j].bold = value == best


def run_table(frame: pd.DataFrame, columns: Sequence[str]) -> Table:
    """One line per run."""
    table = Table(header=list(columns), numeric=[_is_numeric(frame[c]) for c in columns])
    for _, record in frame[list(columns)].iterrows():
        cells = []
        for column, numeric in zip(columns, table.numeric):
            value = record[column]
            number = float(value) if numeric and pd.notna(value) else None
            cells.append(Cell(format_number(value if pd.notna(value) else None), value=number))
        table.rows.append(cells)
    table.raw = frame[list(columns)].reset_index(drop=True)
    _mark_best(table, columns)
    return table


def grouped_table(frame: pd.DataFrame, group_by: Sequence[str], columns: Sequence[str]) -> Table:
    """One line per group: ``n`` runs, numeric columns as mean ± std (sample std, ddof=1).

    A numeric cell averaged over fewer runs than ``n`` (some runs lack the value) says so with
    ``(n=k)``; text columns list their distinct values.
    """
    values = [c for c in columns if c not in group_by]
    numeric = {c: _is_numeric(frame[c]) for c in values}
    table = Table(header=[*group_by, "n", *values], numeric=[False] * len(group_by) + [True] + [numeric[c] for c in values])
    raw_rows = []
    for keys, group in frame.groupby(list(group_by), dropna=False, sort=True):
        keys = keys if isinstance(keys, tuple) else (keys,)
        cells = [Cell(format_number(k if pd.notna(k) else None)) for k in keys]
        cells.append(Cell(str(len(group)), value=None))
        raw = dict(zip(group_by, keys), n=len(group))
        for column in values:
            series = group[column]
            if numeric[column]:
                count = int(series.notna().sum())
                mean = float(series.mean()) if count else math.nan
                std = float(series.std(ddof=1)) if count > 1 else math.nan
                text = format_number(mean)
                if count and count < len(group):
                    text += f" (n={count})"
                cells.append(Cell(text, std=_format_std(std, format_number(mean)) or None, value=mean if count else None))
                raw[f"{column}_mean"], raw[f"{column}_std"], raw[f"{column}_n"] = mean, std, count
            else:
                distinct = sorted({str(v) for v in series.dropna()})
                cells.append(Cell("/".join(distinct)))
                raw[column] = "/".join(distinct)
        table.rows.append(cells)
        raw_rows.append(raw)
    table.raw = pd.DataFrame(raw_rows)
    _mark_best(table, table.header)
    return table


def build_table(
    frame: pd.DataFrame,
    where: Sequence[str] = (),
    columns: Sequence[str] | None = None,
    group_by: Sequence[str] | None = None,
) -> Table:
    """Filter ``frame`` and build the table the CLI prints.

    Args:
        frame: runs, e.g. ``ResultsStore.frame()``.
        where: filter clauses (see ``filter_rows``).
        columns: columns or patterns to show; default: the metric columns that hold values
            (after the run's identity columns when not grouped).
        group_by: columns to group by; numeric columns are then averaged (mean ± std, n).
    """
    frame = filter_rows(frame, where)
    if frame.empty:
        raise ReportError("no runs match the filters; loosen --where (failed runs need --all).")
    chosen = resolve_columns(frame, columns) if columns else None
    if group_by:
        keys = resolve_columns(frame, group_by)
        return grouped_table(frame, keys, chosen or metric_columns(frame))
    shown = chosen or [c for c in DEFAULT_ROW_COLUMNS if c in frame.columns] + metric_columns(frame)
    return run_table(frame, shown)


# ------------------------------------------------------------------------------ renderers
def _markdown_cell(cell: Cell) -> str:
    text = cell.text + (f" ± {cell.std}" if cell.std else "")
    text = text.replace("|", "\\|")
    return f"**{text}**" if cell.bold and text else text


def render_markdown(table: Table) -> str:
    """A GitHub-flavoured Markdown pipe table, numbers right-aligned, best values in bold."""
    header = [h.replace("|", "\\|") for h in table.header]
    body = [[_markdown_cell(c) for c in row] for row in table.rows]
    widths = [max(3, len(h), *(len(r[j]) for r in body)) for j, h in enumerate(header)]

    def line(cells: Sequence[str]) -> str:
        padded = [c.rjust(w) if num else c.ljust(w) for c, w, num in zip(cells, widths, table.numeric)]
        return "| " + " | ".join(padded) + " |"

    rule = ["-" * (w - 1) + ":" if num else "-" * w for w, num in zip(widths, table.numeric)]
    return "\n".join([line(header), "|" + "|".join(f" {r} " for r in rule) + "|", *(line(r) for r in body)])


_LATEX_SPECIAL = {
    "\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
    "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}",
}


def latex_escape(text: str) -> str:
    """Escape LaTeX special characters."""
    return "".join(_LATEX_SPECIAL.get(ch, ch) for ch in text)


def _latex_cell(cell: Cell) -> str:
    text = latex_escape(cell.text) + (rf" $\pm$ {latex_escape(cell.std)}" if cell.std else "")
    return rf"\textbf{{{text}}}" if cell.bold and text else text


def render_latex(table: Table) -> str:
    """A ``tabular`` with booktabs rules (``\\usepackage{booktabs}``), best values in bold."""
    spec = "".join("r" if num else "l" for num in table.numeric)
    lines = [
        rf"\begin{{tabular}}{{{spec}}}",
        r"\toprule",
        " & ".join(latex_escape(h) for h in table.header) + r" \\",
        r"\midrule",
        *(" & ".join(_latex_cell(c) for c in row) + r" \\" for row in table.rows),
        r"\bottomrule",
        r"\end{tabular}",
    ]
    return "\n".join(lines)


def render_csv(table: Table) -> str:
    """Raw numbers (full precision; grouped: ``<col>_mean``, ``<col>_std``, ``<col>_n``), no bold."""
    buffer = io.StringIO()
    raw = table.raw if table.raw is not None else pd.DataFrame(columns=table.header)
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(raw.columns)
    for record in raw.itertuples(index=False):
        writer.writerow(["" if v is None or (isinstance(v, float) and math.isnan(v)) else
                         (repr(v) if isinstance(v, float) else v) for v in record])
    return buffer.getvalue().rstrip("\n")


def render(table: Table, fmt: str = "markdown") -> str:
    """Render in one of ``FORMATS``."""
    renderers = {"markdown": render_markdown, "latex": render_latex, "csv": render_csv}
    if fmt not in renderers:
        raise ReportError(f"unknown format {fmt!r}; choose one of {', '.join(FORMATS)}.")
    return renderers[fmt](table)


def render_run(row: dict[str, Any]) -> str:
    """One run vertically: ``column  value`` lines, missing values left out."""
    shown = [(c, v) for c, v in row.items() if v is not None]
    width = max(len(c) for c, _ in shown)
    # Floats at full precision (repr): this is the one place to read a run's exact values.
    return "\n".join(
        f"{column.ljust(width)}  {repr(value) if isinstance(value, float) else value}" for column, value in shown
    )
