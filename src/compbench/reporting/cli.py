"""``compbench-report``: export the results store, print tables, show one run.

Examples::

    compbench-report export                                  # results/runs.csv + runs.parquet
    compbench-report table --where task=masakhaner --group-by model,method \\
        --columns quality.f1,eff.size_mb                     # mean ± std over seeds, best in bold
    compbench-report table --format latex --where "method=kd,none" --group-by method
    compbench-report show 3f2a                               # one run (unique run_id prefix)

Errors are one sentence on stderr and exit code 2.
"""

from __future__ import annotations

import argparse
import sqlite3
import sys
from pathlib import Path

from compbench.records.store import DEFAULT_DB, ResultsStore
from compbench.reporting.tables import FORMATS, ReportError, build_report, render_report, render_run

PROG = "compbench-report"


def _split(text: str | None) -> list[str] | None:
    return [part.strip() for part in text.split(",") if part.strip()] if text else None


def _store(db: Path) -> ResultsStore:
    if not db.is_file():
        raise ReportError(f"no results database at {db}; run an experiment first or pass --db PATH.")
    return ResultsStore(db)


def _export(args: argparse.Namespace) -> int:
    store = _store(args.db)
    csv_path, parquet_path = store.export(args.out_dir / "runs.csv", args.out_dir / "runs.parquet")
    print(f"wrote {len(store)} runs to {csv_path} and {parquet_path}")
    return 0


def _table(args: argparse.Namespace) -> int:
    report = build_report(
        _store(args.db).frame(), where=args.where, columns=_split(args.columns), group_by=_split(args.group_by),
        per_run=args.runs, delta=args.delta, include_failed=args.all, include_debug=args.include_debug,
    )
    print(render_report(report, args.format))
    if args.format == "csv":  # the CSV stays machine-readable; what it leaves out is said on stderr
        for note in report.notes:
            print(f"note: {note}", file=sys.stderr)
    return 0


def _show(args: argparse.Namespace) -> int:
    rows = _store(args.db).rows()
    exact = [r for r in rows if r["run_id"] == args.run_id]
    matches = exact or [r for r in rows if str(r["run_id"]).startswith(args.run_id)]
    if not matches:
        raise ReportError(f"no run with run_id {args.run_id!r} in {args.db}.")
    if len(matches) > 1:
        raise ReportError(f"run_id prefix {args.run_id!r} matches {len(matches)} runs; give more characters.")
    print(render_run(matches[0], exact=args.exact))
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The argument parser (``--db`` on every subcommand)."""
    parser = argparse.ArgumentParser(prog=PROG, description="Report on the compbench results store.")
    commands = parser.add_subparsers(dest="command", required=True)

    def add(name: str, help_text: str) -> argparse.ArgumentParser:
        sub = commands.add_parser(name, help=help_text, description=help_text)
        sub.add_argument("--db", type=Path, default=DEFAULT_DB, help=f"results database (default {DEFAULT_DB})")
        return sub

    export = add("export", "write runs.csv and runs.parquet from the store")
    export.add_argument("--out-dir", type=Path, default=Path("results"), help="output folder (default results)")
    export.set_defaults(handler=_export)

    table = add("table", "print a table of runs: per task, seeds averaged (mean ± std, n), best in bold")
    table.add_argument("--where", action="append", default=[], metavar="COL=VALUE",
                       help="filter (repeatable): col=v, col=v1,v2, col!=v, col>=x, col<x")
    table.add_argument("--columns", help="comma-separated columns or patterns, e.g. quality.f1,eff.* "
                       "(default per task: main quality metric, calib.ece, robust.mean_drop, eff.size_mb, eff.speedup)")
    table.add_argument("--group-by", help="comma-separated columns; other numeric columns become mean ± std "
                       "(default: model, task, lang, method and swept method parameters)")
    table.add_argument("--runs", action="store_true", help="one line per run instead of averaging seeds")
    table.add_argument("--delta", action="store_true",
                       help="add each metric's difference from the method=none run of the same teacher (Δ, Δ%%)")
    table.add_argument("--format", choices=FORMATS, default="markdown")
    table.add_argument("--all", action="store_true",
                       help="count failed runs in the table (they are always listed under it)")
    table.add_argument("--include-debug", action="store_true",
                       help="include runs made with a debug config (debug=fast), left out by default")
    table.set_defaults(handler=_table)

    show = add("show", "print one run vertically")
    show.add_argument("run_id", help="run_id or a unique prefix of it")
    show.add_argument("--exact", action="store_true", help="floats at full precision (default: 4 significant digits)")
    show.set_defaults(handler=_show)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``compbench-report``; returns the exit code."""
    args = build_parser().parse_args(argv)
    try:
        return args.handler(args)
    except (ReportError, OSError, sqlite3.Error) as exc:
        message = " ".join(str(exc).split())  # one line, whatever the exception carried
        print(f"{PROG}: error: {message}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
