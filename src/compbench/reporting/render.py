"""Rendering result tables with the libraries: ``tabulate`` for Markdown, pandas' ``Styler``
(jinja2) for LaTeX and HTML, pandas for CSV. What they cannot do is kept here: ``mean ± std``
cells, ``n`` per cell, bold chosen per (task, model) and footers that list failed runs and
missing baselines.
"""

from __future__ import annotations

import html
import math
from collections.abc import Sequence
from typing import Any

import pandas as pd

from compbench.records.schema import METRIC_PREFIXES
from compbench.reporting.numbers import format_number
from compbench.reporting.selection import ReportError
from compbench.reporting.tables import Report, Table

FORMATS = ("markdown", "latex", "html", "csv")


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
