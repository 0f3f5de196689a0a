"""compbench-report: the real console script on a temp store, and the table logic in-process."""

import math
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from compbench.records.store import ResultsStore
from compbench.reporting import cli
from compbench.reporting.tables import (
    ReportError,
    build_table,
    filter_rows,
    format_number,
    latex_escape,
    render,
)

# Two seeds per (model, method). quality.f1 is higher-is-better, eff.size_mb and quality.ppl
# lower-is-better (registry); eff.mode has no direction; quality.custom is not registered.
RUNS = [
    # model, method, seed, f1, size_mb, ppl
    ("xlmr", "none", 0, 0.80, 500.0, 10.0),
    ("xlmr", "none", 1, 0.82, 500.0, 12.0),
    ("xlmr", "kd", 0, 0.78, 250.0, 11.0),
    ("xlmr", "kd", 1, 0.76, 250.0, 13.0),
    ("xlmr", "prune+quant", 0, 0.70, 60.0, 30.0),
    ("xlmr", "prune+quant", 1, 0.72, 60.0, 32.0),
]


def make_store(path: Path) -> ResultsStore:
    store = ResultsStore(path)
    for i, (model, method, seed, f1, size, ppl) in enumerate(RUNS):
        store.append({
            "run_id": f"run{i:02d}-{method}", "status": "ok", "error": "", "model": model, "task": "ner",
            "lang": "", "method": method, "seed": seed, "config_hash": f"h{i}",
            "started_at": f"2024-01-0{i + 1}T00:00:00+00:00", "teacher_reused": i > 0,
            "quality.f1": f1, "quality.ppl": ppl, "quality.custom": 100.0 - i, "eff.size_mb": size,
            "eff.mode": "dense", **({"method.alpha": 0.5} if method == "kd" else {}),
        })
    store.append({"run_id": "run99-failed", "status": "failed", "error": "RuntimeError: boom",
                  "model": "xlmr", "method": "kd", "seed": 2, "quality.f1": math.nan})
    return store


@pytest.fixture
def store(tmp_path) -> ResultsStore:
    return make_store(tmp_path / "results" / "compbench.db")


def report(*args: str) -> subprocess.CompletedProcess:
    script = Path(sys.executable).with_name("compbench-report")
    command = [str(script)] if script.exists() else [sys.executable, "-m", "compbench.reporting.cli"]
    return subprocess.run([*command, *args], capture_output=True, text=True, timeout=120)


def cells(markdown: str) -> list[list[str]]:
    lines = markdown.strip().splitlines()
    return [[c.strip() for c in line.strip("|").split("|")] for line in lines[:1] + lines[2:]]


# ------------------------------------------------------------------------------ via the console script
def test_cli_export_files_reread_equal(store, tmp_path):
    out = tmp_path / "exported"
    done = report("export", "--db", str(store.path), "--out-dir", str(out))
    assert done.returncode == 0, done.stderr
    assert "7 runs" in done.stdout
    frame = store.frame()
    pd.testing.assert_frame_equal(pd.read_parquet(out / "runs.parquet"), frame)
    back = pd.read_csv(out / "runs.csv")
    assert list(back.columns) == list(frame.columns)
    numeric = ["seed", "quality.f1", "quality.ppl", "eff.size_mb", "method.alpha"]
    pd.testing.assert_frame_equal(back[numeric], frame[numeric])
    assert back["run_id"].tolist() == frame["run_id"].tolist()


def test_cli_table_marks_best_per_direction(store):
    done = report("table", "--db", str(store.path), "--group-by", "model,method",
                  "--columns", "quality.f1,quality.ppl,quality.custom,eff.size_mb,eff.mode")
    assert done.returncode == 0, done.stderr
    header, *rows = cells(done.stdout)
    assert header == ["model", "method", "n", "quality.f1", "quality.ppl", "quality.custom", "eff.size_mb", "eff.mode"]
    by_method = {row[1]: dict(zip(header, row)) for row in rows}
    assert set(by_method) == {"none", "kd", "prune+quant"}  # the failed run is left out
    # mean ± sample std over the two seeds: f1 0.80/0.82 -> 0.81 ± 0.01414
    assert by_method["none"]["quality.f1"] == "**0.8100 ± 0.0141**"  # highest F1
    assert by_method["none"]["quality.ppl"] == "**11.00 ± 1.41**"  # lowest perplexity
    assert by_method["prune+quant"]["eff.size_mb"] == "**60.00 ± 0.00**"  # smallest size
    assert by_method["kd"]["n"] == "2"
    bold = {(m, c) for m, row in by_method.items() for c, v in row.items() if v.startswith("**")}
    assert bold == {("none", "quality.f1"), ("none", "quality.ppl"), ("prune+quant", "eff.size_mb")}


def test_cli_unknown_column_is_one_line_and_exit_2(store):
    done = report("table", "--db", str(store.path), "--columns", "quality.f1,quality.f2")
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr.count("\n") == 1
    assert re.fullmatch(r"compbench-report: error: unknown column 'quality\.f2'; did you mean 'quality\.f1'\?\n",
                        done.stderr)


# ------------------------------------------------------------------------------ in-process
def run_main(capsys, *args):
    code = cli.main(list(args))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_missing_db_and_bad_filters_exit_2(store, tmp_path, capsys):
    code, out, err = run_main(capsys, "export", "--db", str(tmp_path / "none.db"))
    assert code == 2 and "no results database" in err and err.count("\n") == 1
    for bad, message in [("seed=zero", "numeric"), ("nosuch=1", "unknown column 'nosuch'"),
                         ("model>1", "not numeric"), ("justtext", "cannot read the filter"),
                         ("method=nothing", "no runs match")]:
        code, out, err = run_main(capsys, "table", "--db", str(store.path), "--where", bad)
        assert code == 2 and message in err and err.count("\n") == 1, (bad, err)


def test_show_prints_one_run_vertically(store, capsys):
    code, out, _ = run_main(capsys, "show", "--db", str(store.path), "run99")
    assert code == 0
    lines = dict(line.split(None, 1) for line in out.strip().splitlines())
    assert lines["status"] == "failed" and lines["error"] == "RuntimeError: boom"
    assert lines["quality.f1"] == "nan"  # measured NaN is shown, missing values are not
    assert "eff.size_mb" not in lines
    code, _, err = run_main(capsys, "show", "--db", str(store.path), "run0")
    assert code == 2 and "matches 6 runs" in err


def test_where_clauses(store):
    frame = store.frame()
    assert len(filter_rows(frame, ["method=kd"])) == 3
    assert len(filter_rows(frame, ["method=kd,none", "status=ok"])) == 4
    assert len(filter_rows(frame, ["method!=kd"])) == 4
    assert filter_rows(frame, ["quality.f1>=0.78"])["quality.f1"].tolist() == [0.80, 0.82, 0.78]
    assert len(filter_rows(frame, ["seed=1"])) == 3
    assert len(filter_rows(frame, ["teacher_reused=false"])) == 1
    assert len(filter_rows(frame, ["lang="])) == 7  # empty text and missing both match
    assert len(filter_rows(frame, ["method.alpha=0.5"])) == 2


def test_failed_runs_only_with_all_or_status_filter(store, capsys):
    _, out, _ = run_main(capsys, "table", "--db", str(store.path), "--columns", "run_id")
    assert "run99-failed" not in out
    _, out, _ = run_main(capsys, "table", "--db", str(store.path), "--columns", "run_id", "--all")
    assert "run99-failed" in out
    _, out, _ = run_main(capsys, "table", "--db", str(store.path), "--columns", "run_id", "--where", "status=failed")
    assert [row[0] for row in cells(out)[1:]] == ["run99-failed"]


def test_group_reports_partial_counts_and_csv_raw_numbers(store):
    frame = store.frame()
    table = build_table(frame, where=["method=kd"], columns=["quality.f1"], group_by=["method"])
    assert render(table)  # renders
    assert table.rows[0][1].text == "3" and table.rows[0][2].text == "0.7700 (n=2)"
    raw = render(build_table(frame, where=["status=ok"], columns=["quality.f1"], group_by=["method"]), "csv")
    lines = raw.splitlines()
    assert lines[0] == "method,n,quality.f1_mean,quality.f1_std,quality.f1_n"
    kd = next(line for line in lines if line.startswith("kd,")).split(",")
    assert float(kd[2]) == pytest.approx(0.77) and float(kd[3]) == pytest.approx(math.sqrt(2) * 0.01)


def test_latex_bold_and_escaping(store):
    table = build_table(store.frame(), where=["status=ok"], columns=["method", "quality.f1", "eff.size_mb"])
    latex = render(table, "latex")
    assert latex.startswith(r"\begin{tabular}{lrr}") and r"eff.size\_mb" in latex
    assert r"none & \textbf{0.8200} & 500.0 \\" in latex
    assert latex.count(r"\textbf") == 3  # best F1 once, smallest size twice (tie)
    assert latex_escape("a_b&c%") == r"a\_b\&c\%"


def test_plain_run_table_defaults_to_identity_and_metrics(store):
    table = build_table(store.frame(), where=["status=ok"])
    assert table.header[:6] == ["run_id", "model", "task", "lang", "method", "seed"]
    assert "quality.f1" in table.header and "eff.size_mb" in table.header
    assert "method.alpha" not in table.header


@pytest.mark.parametrize(
    ("value", "text"),
    [(0.812345, "0.8123"), (35.2139, "35.21"), (498.93, "498.9"), (123456.7, "123457"), (1e-05, "1.000e-05"),
     (3, "3"), (2.0, "2.000"), (11.0, "11.00"), (math.inf, "inf"), (math.nan, ""), (None, ""), ("kd", "kd"), (-0.5, "-0.5000")],
)
def test_format_number(value, text):
    assert format_number(value) == text


def test_unknown_format_is_refused(store):
    with pytest.raises(ReportError, match="unknown format"):
        render(build_table(store.frame(), columns=["quality.f1"]), "html")


def test_console_script_is_declared():
    assert shutil.which("compbench-report") or Path(sys.executable).with_name("compbench-report").exists()
