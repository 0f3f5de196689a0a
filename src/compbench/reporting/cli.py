"""``compbench-report``: tables, paper tables, plots, a dashboard and W&B tables of the store.

Examples::

    compbench-report table                                   # per task: headline metrics, mean ± std, n
    compbench-report table --delta --format latex            # + difference from the method=none run
    compbench-report table --where task=masakhaner --group-by model,method --columns quality.f1,eff.size_mb
    compbench-report paper --list                            # the published tables compbench knows
    compbench-report paper tao2022_gpt2_lm --format latex    # published | ours | difference per cell
    compbench-report plot all --out results/plots            # PNG/SVG/PDF with matplotlib
    compbench-report dashboard --out results/dashboard.html  # one self-contained interactive file
    compbench-report wandb --sweep-id tiny_sweep             # the sweep's table and plots to W&B (offline)
    compbench-report show 3f2a                               # one run (unique run_id prefix)
    compbench-report export                                  # results/runs.csv + runs.parquet

Errors are one sentence on stderr and exit code 2.
"""

from __future__ import annotations

import argparse
import sqlite3
import sys
from pathlib import Path

from compbench.records.store import DEFAULT_DB, ResultsStore
from compbench.reporting.render import FORMATS, render_report, render_run
from compbench.reporting.selection import ReportError, drop_debug, filter_rows
from compbench.reporting.tables import build_report

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


def _data_root(given: Path | None) -> Path | None:
    """``--data-root``, else ``../shared/data`` from here or from the checkout holding compbench."""
    if given is not None:
        return given
    import compbench

    for candidate in (Path("../shared/data"), Path(compbench.__file__).resolve().parents[2] / "../shared/data"):
        if candidate.is_dir():
            return candidate.resolve()
    return None


def _paper(args: argparse.Namespace) -> int:
    from compbench.reporting import papers

    if args.list:
        for spec in papers.list_tables():
            source = spec["source"]
            print(f"{spec['name']:<34} {spec['title']}\n{'':<34} {source['paper']} ({source['read_from']} source)")
        return 0
    if not args.name:
        raise ReportError("name a paper table (compbench-report paper NAME) or pass --list to see them.")
    spec = papers.load_spec(args.name)  # an unknown name fails before the store is read
    # A paper table is useful before any run: it shows the published numbers and what to run.
    frame = ResultsStore(args.db).frame() if args.db.is_file() else None
    if frame is None:
        print(f"note: no results database at {args.db}; every cell of ours is missing.", file=sys.stderr)
        import pandas as pd

        frame = pd.DataFrame(columns=["run_id", "status"])
    table = papers.fill(spec, frame, _data_root(args.data_root))
    print(papers.render_paper(table, args.format, wide=args.wide))
    return 0


def _selected_runs(args: argparse.Namespace):
    """The ok, non-debug (unless asked) runs of the store matching ``--where``, and the store frame."""
    frame = _store(args.db).frame()
    if frame.empty:
        raise ReportError(f"the results store {args.db} holds no runs yet; run an experiment first (e.g. `compbench`).")
    selected = filter_rows(frame, args.where)
    if selected.empty:
        raise ReportError(f"no runs match {' '.join(args.where)}; loosen --where.")
    if not args.include_debug:
        kept, dropped = drop_debug(selected)
        if kept.empty:
            raise ReportError(f"all {dropped} matching runs are debug runs (debug=fast); pass --include-debug to use them.")
        selected = kept
    ok = selected[selected["status"] == "ok"]
    if ok.empty:
        raise ReportError(f"all {len(selected)} matching runs failed; `compbench-report table --all` lists their errors.")
    from compbench.reporting.runs import resolve_run_dir

    ok = ok.copy()
    if "run_dir" in ok.columns:
        ok["run_dir"] = [resolve_run_dir(v, args.db) for v in ok["run_dir"]]
    return ok, frame


def _plot(args: argparse.Namespace) -> int:
    from compbench.reporting.plots import plot

    runs, frame = _selected_runs(args)
    written = plot(runs, args.kind, args.out, args.format, all_methods=frame["method"].dropna().astype(str).tolist(),
                   run_ids=_split(args.runs))
    for path in written:
        print(path)
    return 0


def _dashboard(args: argparse.Namespace) -> int:
    from compbench.reporting.dashboard import write_dashboard

    runs, frame = _selected_runs(args)
    path = write_dashboard(runs, args.out, all_methods=frame["method"].dropna().astype(str).tolist(),
                           source=str(args.db))
    print(f"wrote {path} ({path.stat().st_size / 1e6:.1f} MB, opens offline in any browser)")
    return 0


def _wandb(args: argparse.Namespace) -> int:
    from compbench.reporting.wandb_tables import log_sweep

    frame = _store(args.db).frame()
    known = sorted({str(s) for s in frame.get("sweep_id", []) if isinstance(s, str) and s})
    if args.sweep_id not in known:
        raise ReportError(f"no runs with sweep_id {args.sweep_id!r} in {args.db}; "
                          f"sweep ids there: {', '.join(known) or 'none'}.")
    args.where = [*args.where, f"sweep_id={args.sweep_id}"]
    runs, frame = _selected_runs(args)
    run_dir = log_sweep(runs, sweep_id=args.sweep_id, project=args.project, entity=args.entity, mode=args.mode,
                        out_dir=args.out, all_methods=frame["method"].dropna().astype(str).tolist())
    print(f"logged {len(runs)} runs of sweep {args.sweep_id} to W&B ({args.mode}) in {run_dir}")
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

    paper = add("paper", "lay runs out in the shape of a published table, beside the published numbers")
    paper.add_argument("name", nargs="?", help="a table name (see --list) or a path to a table YAML file")
    paper.add_argument("--list", action="store_true", help="list the paper tables")
    paper.add_argument("--format", choices=("markdown", "latex", "html"), default="markdown")
    paper.add_argument("--wide", action="store_true",
                       help="markdown: published, ours and Δ in separate columns (default: one cell each)")
    paper.add_argument("--data-root", type=Path, default=None,
                       help="folder of reference files some tables read (default ../shared/data)")
    paper.set_defaults(handler=_paper)

    def selection(sub: argparse.ArgumentParser) -> None:
        sub.add_argument("--where", action="append", default=[], metavar="COL=VALUE",
                         help="filter (repeatable), as for table")
        sub.add_argument("--include-debug", action="store_true", help="include runs made with debug=fast")

    from compbench.reporting.plots import FORMATS as IMAGE_FORMATS, KINDS

    plot = add("plot", "draw publication plots (matplotlib)")
    plot.add_argument("kind", choices=(*KINDS, "all"))
    plot.add_argument("--out", type=Path, default=Path("results/plots"), help="output folder (default results/plots)")
    plot.add_argument("--format", choices=IMAGE_FORMATS, default="png")
    plot.add_argument("--runs", help="comma-separated run_ids for the reliability diagram "
                      "(default: the latest run of each method per task)")
    selection(plot)
    plot.set_defaults(handler=_plot)

    dashboard = add("dashboard", "write one self-contained interactive HTML file (plotly, works offline)")
    dashboard.add_argument("--out", type=Path, default=Path("results/dashboard.html"))
    selection(dashboard)
    dashboard.set_defaults(handler=_dashboard)

    wandb = add("wandb", "log a sweep's table and plots to W&B (offline by default)")
    wandb.add_argument("--sweep-id", required=True, help="the sweep_id of the runs (row column sweep_id)")
    wandb.add_argument("--project", default="compbench")
    wandb.add_argument("--entity", default=None)
    wandb.add_argument("--mode", choices=("offline", "online", "disabled"), default="offline")
    wandb.add_argument("--out", type=Path, default=Path("results/wandb"), help="local W&B folder (default results/wandb)")
    selection(wandb)
    wandb.set_defaults(handler=_wandb)

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
