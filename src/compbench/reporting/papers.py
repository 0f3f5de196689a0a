"""Paper tables: our runs laid out in the exact shape of a published table, beside its numbers.

Each table is a YAML file in ``compbench/reporting/papers/`` (adding a table is a data file, not
code). A file holds:

* ``name``, ``title``; ``source``: ``paper``, ``table`` (number, or "not available here"),
  ``read_from`` (``primary``: read in the paper or its released results; ``secondary``: quoted
  by another source), ``notes``;
* ``select``: row-column values every cell's runs must have (e.g. ``model: gpt2``), and
  ``protocol``: a sentence on the protocol plus ``overrides`` added to every cell's command;
* ``columns``: ``key``, ``label``, ``select``, the ``metric`` (a results-row column), ``value``
  (``metric``, or ``delta``/``rel_delta``: the difference from the ``method=none`` run of the
  same teacher, absolute or in %), ``scale`` and ``offset`` (ours are shown as
  ``(value + offset) * scale``, in the published units), ``overrides`` for the command;
* ``rows``: ``label``, ``select``, ``overrides``, ``published: {column key: number | text | null}``
  (null: not available here; text: a claim quoted as a range), and ``runnable: false`` with a
  ``reason`` for a row compbench cannot run yet (it keeps its published numbers);
* optionally ``published_file``: published numbers read from a TSV under the data root
  (``path``, ``key`` column matched to the row's ``key``, ``value`` column, table ``column``).

A cell shows the published number, ours (mean ± std over the matching ok, non-debug runs, and
``n``) and the difference (ours − published). A cell without runs names the ``compbench``
command that fills it.
"""

from __future__ import annotations

import csv
import html
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from compbench.reporting.numbers import column_decimals, fixed
from compbench.reporting.selection import ReportError, add_deltas, baseline_rows, drop_debug

PACKAGE = "compbench.reporting"
FOLDER = "papers"
NOT_AVAILABLE = "not available here"
#: Seeds named in a missing cell's command (a cell is a mean over seeds).
DEFAULT_SEEDS = (0, 1, 2)
_VALUE_KINDS = ("metric", "delta", "rel_delta")


# ------------------------------------------------------------------------------ loading
def table_files() -> dict[str, Any]:
    """``{name: resource}`` of the packaged table files."""
    folder = resources.files(PACKAGE) / FOLDER
    return {entry.name[: -len(".yaml")]: entry for entry in folder.iterdir() if entry.name.endswith(".yaml")}


def list_tables() -> list[dict[str, Any]]:
    """Every packaged table's ``name``, ``title`` and ``source``, sorted by name."""
    return [load_spec(name) for name in sorted(table_files())]


def load_spec(name: str) -> dict[str, Any]:
    """The parsed and checked table file ``name`` (a packaged name, or a path to a YAML file)."""
    files = table_files()
    if name in files:
        text = files[name].read_text(encoding="utf-8")
    elif name.endswith((".yaml", ".yml")) and Path(name).is_file():
        text = Path(name).read_text(encoding="utf-8")
    else:
        import difflib

        close = difflib.get_close_matches(name, list(files), n=1)
        hint = f"did you mean {close[0]!r}? " if close else ""
        raise ReportError(f"unknown paper table {name!r}; {hint}`compbench-report paper --list` lists them.")
    spec = yaml.safe_load(text)
    check_spec(spec, name)
    return spec


def check_spec(spec: dict[str, Any], name: str) -> None:
    """Refuse a table file that breaks the format above, saying where."""
    def fail(what: str) -> None:
        raise ReportError(f"paper table {name!r}: {what}.")

    for key in ("name", "title", "source", "rows", "columns"):
        if key not in spec:
            fail(f"missing key {key!r}")
    for key in ("paper", "table", "read_from"):
        if key not in spec["source"]:
            fail(f"source lacks {key!r}")
    if spec["source"]["read_from"] not in ("primary", "secondary"):
        fail("source.read_from must be primary or secondary")
    keys = [c.get("key") for c in spec["columns"]]
    if len(set(keys)) != len(keys) or None in keys:
        fail("every column needs a unique key")
    for column in spec["columns"]:
        if "metric" not in column and "metric" not in spec:
            fail(f"column {column['key']!r} has no metric")
        if column.get("value", "metric") not in _VALUE_KINDS:
            fail(f"column {column['key']!r}: value must be one of {', '.join(_VALUE_KINDS)}")
    labels = [row.get("label") for row in spec["rows"]]
    if None in labels or len(set(labels)) != len(labels):
        fail("every row needs a unique label")
    for row in spec["rows"]:
        if set(row) - {"label", "key", "select", "overrides", "published", "runnable", "reason"}:
            fail(f"row {row['label']!r} has unknown key(s) {', '.join(sorted(map(str, set(row) - {'label', 'key', 'select', 'overrides', 'published', 'runnable', 'reason'})))}")
        unknown = set(row.get("published") or {}) - set(keys)
        if unknown:
            fail(f"row {row['label']!r} publishes unknown column(s) {', '.join(sorted(unknown))}")
        if row.get("runnable", True) is False and not row.get("reason"):
            fail(f"row {row['label']!r} is not runnable but gives no reason")


# ------------------------------------------------------------------------------ cells
@dataclass
class PaperCell:
    """One (row, column) of a paper table."""

    published: float | str | None
    mean: float | None = None
    std: float | None = None
    n: int = 0
    run_ids: list[str] = field(default_factory=list)
    command: str | None = None  # what fills an empty cell
    reason: str | None = None  # why the suite cannot fill it

    @property
    def difference(self) -> float | None:
        if self.mean is None or not isinstance(self.published, (int, float)) or isinstance(self.published, bool):
            return None
        return self.mean - float(self.published)


@dataclass
class PaperTable:
    """A paper table filled from the store."""

    spec: dict[str, Any]
    cells: list[list[PaperCell]]
    notes: list[str]

    @property
    def row_labels(self) -> list[str]:
        return [r["label"] for r in self.spec["rows"]]

    @property
    def column_labels(self) -> list[str]:
        return [c.get("label", c["key"]) for c in self.spec["columns"]]


def _matches(frame: pd.DataFrame, select: dict[str, Any]) -> pd.Series:
    mask = pd.Series(True, index=frame.index)
    for column, wanted in select.items():
        if column not in frame.columns:
            return pd.Series(False, index=frame.index)
        series = frame[column]
        if isinstance(wanted, bool):
            mask &= series.map(lambda v, w=wanted: v is not None and not pd.isna(v) and bool(v) == w)
        elif isinstance(wanted, (int, float)):
            mask &= pd.to_numeric(series, errors="coerce").sub(float(wanted)).abs().lt(1e-9)
        else:
            mask &= series.astype(str) == str(wanted)
    return mask.fillna(False).astype(bool)


def _override(column: str, value: Any) -> str | None:
    """The command-line override that makes a run have ``column == value``."""
    text = str(value).lower() if isinstance(value, bool) else str(value)
    if column == "method" and "+" in text:
        return f"method=[{text.replace('+', ',')}]"
    if column in ("model", "task", "method", "seed"):
        return f"{column}={text}"
    if column == "lang":
        return f"task.lang={text}"
    if column.startswith("method."):
        return f"{column}={text}"
    return None  # e.g. eff.device: not a config key


def cell_command(spec: dict[str, Any], row: dict[str, Any], column: dict[str, Any]) -> str:
    """``compbench -m ...`` that produces the runs of one cell (seeds included)."""
    select = {**spec.get("select", {}), **column.get("select", {}), **row.get("select", {})}
    # The protocol (e.g. experiment=...) first; explicit overrides win over it in Hydra anyway.
    parts = list((spec.get("protocol") or {}).get("overrides", []))
    for extra in [_override(k, v) for k, v in select.items()] + column.get("overrides", []) + row.get("overrides", []):
        if extra and extra not in parts:
            parts.append(extra)
    seeds = ",".join(str(s) for s in spec.get("seeds", DEFAULT_SEEDS))
    return f"compbench -m {' '.join(parts)} seed={seeds}"


def _published_from_file(spec: dict[str, Any], data_root: Path | None) -> tuple[dict[str, float], str | None]:
    source = spec.get("published_file")
    if not source:
        return {}, None
    if data_root is None:
        return {}, f"published numbers {NOT_AVAILABLE}: no data root given (--data-root) for {source['path']}."
    path = Path(data_root) / source["path"]
    if not path.is_file():
        return {}, f"published numbers {NOT_AVAILABLE}: {path} not found (pass --data-root DIR)."
    with open(path, newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle, delimiter="\t")
        values = {record[source["key"]]: float(record[source["value"]]) for record in reader}
    return values, None


def fill(spec: dict[str, Any], frame: pd.DataFrame, data_root: Path | None = None) -> PaperTable:
    """Fill ``spec``'s cells from the runs in ``frame`` (ok, non-debug runs only)."""
    notes: list[str] = []
    runs = frame[frame["status"] == "ok"] if "status" in frame.columns else frame
    runs, dropped = drop_debug(runs)
    if dropped:
        notes.append(f"{dropped} debug run(s) are never matched: a debug config is not the paper's protocol.")
    from_file, problem = _published_from_file(spec, data_root)
    if problem:
        notes.append(problem)
    baselines = baseline_rows(runs) if any(
        c.get("value", "metric") != "metric" for c in spec["columns"]) else {}
    table_select = spec.get("select", {})
    cells = []
    for row in spec["rows"]:
        published = dict(row.get("published") or {})
        if from_file and row.get("key") in from_file:
            published.setdefault(spec["published_file"]["column"], from_file[row["key"]])
        line = []
        for column in spec["columns"]:
            cell = PaperCell(published=published.get(column["key"]))
            if row.get("runnable", True) is False:
                cell.reason = row["reason"]
                line.append(cell)
                continue
            select = {**table_select, **column.get("select", {}), **row.get("select", {})}
            matched = runs[_matches(runs, select)]
            metric = column.get("metric", spec.get("metric"))
            kind = column.get("value", "metric")
            if metric in matched.columns and len(matched):
                if kind != "metric":
                    matched, _ = add_deltas(matched, [metric], baselines)
                    source = ("Δ " if kind == "delta" else "Δ% ") + metric
                else:
                    source = metric
                values = matched[source].astype(float)
                values = (values + float(column.get("offset", 0.0))) * float(column.get("scale", 1.0))
                values = values.dropna()
                if len(values):
                    cell.mean = float(values.mean())
                    cell.std = float(values.std(ddof=1)) if len(values) > 1 else None
                    cell.n = len(values)
                    cell.run_ids = matched.loc[values.index, "run_id"].tolist()
            if cell.n == 0:
                cell.command = cell_command(spec, row, column)
            line.append(cell)
        cells.append(line)
    return PaperTable(spec, cells, notes)


# ------------------------------------------------------------------------------ rendering
def display_frame(table: PaperTable) -> tuple[pd.DataFrame, list[str]]:
    """(cells as text under a (column, published/ours/Δ) header, footnotes)."""
    footnotes: list[str] = []
    commands: dict[str, int] = {}
    header = pd.MultiIndex.from_tuples(
        [(label, part) for label in table.column_labels for part in ("published", "ours", "Δ")])
    body = []
    for j, column in enumerate(table.spec["columns"]):
        numbers = [c.published for line in table.cells for c in [line[j]] if isinstance(c.published, (int, float))]
        numbers += [line[j].mean for line in table.cells if line[j].mean is not None]
        column["_decimals"] = column.get("decimals", column_decimals(numbers) if numbers else 2)
    for line in table.cells:
        out = []
        for column, cell in zip(table.spec["columns"], line):
            decimals = column["_decimals"]
            if isinstance(cell.published, (int, float)) and not isinstance(cell.published, bool):
                published = fixed(float(cell.published), decimals)
            elif isinstance(cell.published, str):
                published = cell.published
            else:
                published = "n/a"
            if cell.n:
                ours = fixed(cell.mean, decimals) + (f" ± {fixed(cell.std, decimals)}" if cell.std is not None else "")
                ours += f" (n={cell.n})"
            elif cell.reason:
                ours = "not runnable"
            else:
                number = commands.setdefault(cell.command, len(commands) + 1)
                ours = f"missing [{number}]"
            diff = cell.difference
            out += [published, ours, "" if diff is None else f"{diff:+.{decimals if decimals is not None else 3}f}"]
        body.append(out)
    frame = pd.DataFrame(body, columns=header, index=pd.Index(table.row_labels))
    source = table.spec["source"]
    footnotes.append(f"source: {source['paper']}; table: {source['table']}; numbers read from a {source['read_from']} "
                     "source" + (f" ({source['notes'].strip()})" if source.get("notes") else "") + ".")
    if (table.spec.get("protocol") or {}).get("note"):
        footnotes.append(f"protocol: {table.spec['protocol']['note'].strip()}")
    footnotes.append(f"n/a: published number {NOT_AVAILABLE}. ours: mean ± sample std over the matching ok runs "
                     "(seeds), n runs; Δ = ours − published.")
    for note in table.spec.get("notes", []):
        footnotes.append(note.strip())
    for row in table.spec["rows"]:
        if row.get("runnable", True) is False:
            footnotes.append(f"{row['label']}: not runnable: {row['reason']}")
    footnotes += table.notes
    for command, number in commands.items():
        footnotes.append(f"[{number}] `{command}`")
    return frame, footnotes


def render_paper(table: PaperTable, fmt: str = "markdown", wide: bool = False) -> str:
    """Render in markdown (``tabulate``), latex or html (pandas ``Styler``), with footnotes.

    LaTeX and HTML give each published column three sub-columns (published, ours, Δ) under one
    header; Markdown has no column spans, so by default it writes the three in one cell
    (``published · ours · Δ``), keeping the published table's shape; ``wide`` splits them.
    """
    frame, footnotes = display_frame(table)
    title = f"{table.spec['title']} ({table.spec['name']})"
    if fmt == "markdown":
        from tabulate import tabulate

        if wide:
            headers = [""] + [f"{label} {part}" for label, part in frame.columns]
            rows = [[label, *values] for label, values in zip(frame.index, frame.values.tolist())]
        else:
            labels = list(dict.fromkeys(label for label, _ in frame.columns))
            headers = [""] + [f"{label} (published · ours · Δ)" for label in labels]
            rows = [[index, *(" · ".join(part or "—" for part in frame.loc[index, label].tolist())
                              for label in labels)] for index in frame.index]
        body = tabulate(rows, headers=headers, tablefmt="github", disable_numparse=True,
                        colalign=["left"] + ["right"] * (len(headers) - 1))
        return f"**{title}**\n\n{body}\n\n" + "\n".join(f"- {n}" for n in footnotes)
    styler = frame.style.format(escape=fmt if fmt in ("latex", "html") else None)
    styler = styler.format_index(escape=fmt, axis=0).format_index(escape=fmt, axis=1)
    if fmt == "latex":
        spec = "l" + "r" * frame.shape[1]
        latex = styler.to_latex(hrules=True, multicol_align="c", column_format=spec,
                                caption=None).replace("±", r"$\pm$").replace("Δ", r"$\Delta$")
        return f"% {title}\n" + latex.rstrip("\n") + "\n" + "\n".join(f"% {n}" for n in footnotes)
    if fmt == "html":
        styler = styler.set_caption(html.escape(title)).set_table_attributes('class="compbench-paper"')
        notes = "".join(f"<li>{html.escape(n)}</li>" for n in footnotes)
        return styler.to_html().rstrip("\n") + f'\n<ul class="notes">{notes}</ul>'
    raise ReportError(f"unknown format {fmt!r} for a paper table; choose markdown, latex or html.")
