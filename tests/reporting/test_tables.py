"""compbench-report table/show/export: the real console script on temp stores, and the table
logic in-process, against synthetic stores of known rows (report_stores.py)."""

import math
import re
import shutil
import sys
from pathlib import Path

import pandas as pd
import pytest
from report_stores import cells, mark_debug, report, store, study_store  # noqa: F401 (fixtures)

from compbench.records.store import ResultsStore
from compbench.reporting import cli
from compbench.reporting.numbers import format_number
from compbench.reporting.render import render, render_report
from compbench.reporting.selection import ReportError, filter_rows
from compbench.reporting.tables import build_report, build_table


def run_main(capsys, *args):
    code = cli.main(list(args))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def by(header, rows, key):
    return {row[header.index(key)]: dict(zip(header, row)) for row in rows}


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


def test_cli_table_aggregates_marks_best_and_lists_failed(store):
    done = report("table", "--db", str(store.path), "--group-by", "model,method",
                  "--columns", "quality.f1,quality.ppl,quality.custom,eff.size_mb,eff.mode")
    assert done.returncode == 0, done.stderr
    header, *rows = cells(done.stdout)
    assert header == ["model", "method", "n", "quality.f1", "quality.ppl", "quality.custom", "eff.size_mb", "eff.mode"]
    rows = by(header, rows, "method")
    assert set(rows) == {"none", "kd", "prune+quant"}  # the failed run is not counted...
    # mean ± sample std over the two seeds: f1 0.80/0.82 -> 0.81 ± 0.01414; one decimal count per column
    assert rows["none"]["quality.f1"] == "**0.8100 ± 0.0141**"  # highest F1
    assert rows["none"]["quality.ppl"] == "**11.00 ± 1.41**"  # lowest perplexity
    assert rows["prune+quant"]["eff.size_mb"] == "**60.0 ± 0.0**"  # smallest size
    assert rows["kd"]["n"] == "2"
    bold = {(m, c) for m, row in rows.items() for c, v in row.items() if v.startswith("**")}
    assert bold == {("none", "quality.f1"), ("none", "quality.ppl"), ("prune+quant", "eff.size_mb")}
    # ...but listed under the table with its one-line error
    assert "- failed: run99-failed (xlmr/ner/kd, seed 2): RuntimeError: boom" in done.stdout


def test_cli_unknown_column_is_one_line_and_exit_2(store):
    done = report("table", "--db", str(store.path), "--columns", "quality.f1,quality.f2")
    assert done.returncode == 2 and done.stdout == ""
    assert re.fullmatch(r"compbench-report: error: unknown column 'quality\.f2'; did you mean 'quality\.f1'\?\n",
                        done.stderr)


@pytest.mark.parametrize("fmt", ["markdown", "latex", "html", "csv"])
def test_cli_every_format(store, fmt):
    done = report("table", "--db", str(store.path), "--format", fmt)
    assert done.returncode == 0, done.stderr
    text = done.stdout
    if fmt == "csv":
        frame = pd.read_csv(pd.io.common.StringIO(text))
        assert list(frame["method"]) == ["kd", "none", "prune+quant"]
        assert frame.loc[frame["method"] == "none", "quality.f1_mean"].item() == pytest.approx(0.81)
        assert "failed: run99-failed" in done.stderr  # the CSV stays data; notes go to stderr
    elif fmt == "latex":
        assert r"\toprule" in text and r"\bfseries 0.8100 $\pm$ 0.0141" in text and r"calib.ece" in text
        assert "% failed: run99-failed" in text
    elif fmt == "html":
        assert '<table id=' in text and "font-weight: bold" in text and "0.8100 ± 0.0141" in text
        assert "<li>failed: run99-failed (xlmr/ner/kd, seed 2): RuntimeError: boom</li></ul>" in text
    else:
        assert cells(text)[0] == ["model", "task", "lang", "method", "n", "quality.f1", "calib.ece", "eff.size_mb"]


# ------------------------------------------------------------------------------ bad input: one sentence, exit 2
def test_bad_input_exits_2_with_one_sentence(store, tmp_path, capsys):
    empty = ResultsStore(tmp_path / "empty.db")
    empty.append({"run_id": "x", "status": "ok"})
    with __import__("sqlite3").connect(empty.path) as conn:
        conn.execute("DELETE FROM runs")
    cases = [
        (("export", "--db", str(tmp_path / "none.db")), "no results database"),
        (("table", "--db", str(empty.path)), "holds no runs yet"),
        (("table", "--db", str(store.path), "--where", "method=nothing"), "no runs match method=nothing"),
        (("table", "--db", str(store.path), "--where", "seed=zero"), "numeric"),
        (("table", "--db", str(store.path), "--where", "nosuch=1"), "unknown column 'nosuch'"),
        (("table", "--db", str(store.path), "--where", "model>1"), "not numeric"),
        (("table", "--db", str(store.path), "--where", "justtext"), "cannot read the filter"),
        (("table", "--db", str(store.path), "--where", "seed=2"), "all 1 matching runs failed"),
        (("plot", "size", "--db", str(empty.path), "--out", str(tmp_path)), "holds no runs yet"),
        (("dashboard", "--db", str(empty.path), "--out", str(tmp_path / "d.html")), "holds no runs yet"),
        (("dashboard", "--db", str(store.path), "--where", "method=nothing"), "no runs match method=nothing"),
        (("paper", "--db", str(store.path)), "name a paper table"),
    ]
    for args, message in cases:
        code, out, err = run_main(capsys, *args)
        assert code == 2 and out == "" and message in err and err.count("\n") == 1, (args, err)


# ------------------------------------------------------------------------------ in-process
def test_show_rounds_and_exact(store, capsys):
    code, out, _ = run_main(capsys, "show", "--db", str(store.path), "run04")
    lines = dict(line.split(None, 1) for line in out.strip().splitlines())
    assert code == 0 and lines["calib.ece"] == "0.09000" and lines["quality.f1"] == "0.7000"
    _, out, _ = run_main(capsys, "show", "--db", str(store.path), "run04", "--exact")
    assert dict(line.split(None, 1) for line in out.strip().splitlines())["calib.ece"] == repr(0.05 + 0.01 * 4)
    code, out, _ = run_main(capsys, "show", "--db", str(store.path), "run99")
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
    assert len(filter_rows(frame, ["teacher_reused=false"])) == 1
    assert len(filter_rows(frame, ["lang="])) == 7  # empty text and missing both match
    assert len(filter_rows(frame, ["method.alpha=0.5"])) == 2


def test_std_of_one_run_is_not_shown_and_partial_counts_are(store):
    frame = store.frame()
    one = build_table(frame, where=["seed=0"], columns=["quality.f1"], group_by=["method"])
    f1 = {row[0].text: row[2] for row in one.rows}
    assert f1["kd"].display() == "0.7800" and f1["kd"].std is None  # n=1: no ± (undefined std)
    raw = render(one, "csv").splitlines()
    assert raw[0] == "method,n,quality.f1_mean,quality.f1_std,quality.f1_n" and raw[1] == "kd,1,0.78,,1"
    table = build_table(frame, where=["method=kd"], columns=["quality.f1"], group_by=["method"], include_failed=True)
    assert table.rows[0][1].text == "3" and table.rows[0][2].display() == "0.7700 ± 0.0141 (n=2)"
    csv = render(build_table(frame, columns=["quality.f1"], group_by=["method"]), "csv").splitlines()
    kd = next(line for line in csv if line.startswith("kd,")).split(",")
    assert float(kd[2]) == pytest.approx(0.77) and float(kd[3]) == pytest.approx(math.sqrt(2) * 0.01)


def test_delta_from_the_baseline_of_the_same_teacher(store):
    frame = store.frame()
    report_ = build_report(frame, columns=["quality.f1", "eff.size_mb"], group_by=["method"], delta=True)
    (table,) = report_.tables
    assert table.header == ["method", "n", "quality.f1", "eff.size_mb", "Δ quality.f1", "Δ% quality.f1",
                            "Δ eff.size_mb", "Δ% eff.size_mb"]
    rows = {row[0].text: row for row in table.rows}
    # Paired per seed: kd - none = 0.78-0.80, 0.76-0.82 -> -0.02, -0.06: mean -0.04, std 0.0283
    assert rows["kd"][4].value == pytest.approx(-0.04) and rows["kd"][4].std_value == pytest.approx(math.sqrt(2) * 0.02)
    rel = [100 * (0.78 - 0.80) / 0.80, 100 * (0.76 - 0.82) / 0.82]
    assert rows["kd"][5].value == pytest.approx(sum(rel) / 2, abs=0.005)
    assert rows["prune+quant"][7].value == pytest.approx(-88.0)
    assert rows["none"][4].value == 0.0
    assert not any(c.bold for row in table.rows for c in row[4:])  # differences are not "best"
    assert not [n for n in report_.notes if "baseline" in n]


def test_delta_names_the_missing_baseline_and_its_command(store):
    frame = store.frame()
    frame = frame[~((frame["method"] == "none") & (frame["seed"] == 1))]
    report_ = build_report(frame, columns=["quality.f1"], group_by=["method", "seed"], delta=True)
    rows = {(r[0].text, r[1].text): r for r in report_.tables[0].rows}
    assert rows[("kd", "1")][4].text == "" and rows[("kd", "0")][4].value == pytest.approx(-0.02)
    (note,) = [n for n in report_.notes if "baseline" in n]
    assert note.startswith("no method=none baseline for teacher t1 (model=xlmr, task=ner, seed=1; 2 run(s))")
    assert "`compbench model=xlmr task=ner seed=1 method=none`" in note


def test_best_only_within_the_same_task_and_model():
    rows = [("a", "ner", "none", 0.9), ("a", "ner", "kd", 0.8), ("b", "ner", "none", 0.7), ("b", "ner", "kd", 0.75),
            ("a", "pos", "none", 0.5)]
    frame = pd.DataFrame([{"run_id": f"r{i}", "status": "ok", "model": m, "task": t, "method": me, "seed": 0,
                           "quality.f1": f} for i, (m, t, me, f) in enumerate(rows)])
    table = build_table(frame, columns=["quality.f1"], group_by=["model", "task", "method"])
    bold = {(r[0].text, r[1].text, r[2].text) for r in table.rows if r[4].bold}
    assert bold == {("a", "ner", "none"), ("b", "ner", "kd")}  # ("a","pos") is alone: not bold
    mixed = build_table(frame, columns=["quality.f1"], group_by=["method"])  # each row mixes models
    assert not any(r[2].bold for r in mixed.rows)


def test_default_is_one_small_table_per_task(study_store):
    report_ = build_report(study_store.frame())
    titles = [t.title for t in report_.tables]
    assert titles == ["task ner", "task smoke_lm"]
    ner, lm = report_.tables
    assert ner.header == ["model", "task", "lang", "method", "method.sparsity", "n", "quality.f1", "calib.ece",
                          "robust.mean_drop", "eff.size_mb", "eff.speedup"]
    assert lm.header[:8] == ["model", "task", "lang", "method", "method.e_bits", "method.w_bits", "n", "quality.ppl"]
    assert "eff.size_mb" in lm.header and "calib.ece" not in lm.header
    assert any("not measured in these runs: calib.ece, eff.speedup, robust.mean_drop" in n for n in report_.notes)
    text = render_report(report_)
    assert "**task ner**" in text and "**task smoke_lm**" in text


def test_the_main_metric_is_what_the_rows_name_with_a_fallback_for_older_rows():
    from compbench.reporting.summary import row_main_metric
    from compbench.reporting.selection import main_metric, main_metrics

    # A task added later (main metric quality.accuracy) needs no list anywhere in reporting.
    new = {"main_metric": "quality.accuracy", "quality.accuracy": 0.9, "quality.f1": 0.5}
    legacy = {"quality.ppl": 30.0}  # stored before rows named their main metric
    assert row_main_metric(new) == "quality.accuracy" and row_main_metric(legacy) == "quality.ppl"
    assert row_main_metric({"main_metric": "quality.f1", "status": "failed"}) is None
    frame = pd.DataFrame([new])
    assert main_metric(frame) == "quality.accuracy"
    assert main_metrics(pd.DataFrame([new, legacy])) == ["quality.accuracy", "quality.f1", "quality.ppl"]
    assert main_metric(pd.DataFrame([legacy])) == "quality.ppl"


def test_debug_runs_are_left_out_unless_asked(store, capsys):
    older = store.frame().drop(columns=["debug"], errors="ignore")  # a store from before the column
    assert len(build_report(older, columns=["quality.f1"]).tables[0].rows) == 3
    code, out, _ = run_main(capsys, "table", "--db", str(store.path))  # no run marked
    assert code == 0 and "debug" not in out
    mark_debug(store.path, {"run02-kd", "run03-kd"})
    code, out, _ = run_main(capsys, "table", "--db", str(store.path))
    header, *rows = cells(out)
    assert "kd" not in by(header, rows, "method") and "2 debug run(s) left out (--include-debug shows them)." in out
    code, out, _ = run_main(capsys, "table", "--db", str(store.path), "--include-debug")
    assert "kd" in by(*(lambda c: (c[0], c[1:]))(cells(out)), "method")
    code, _, err = run_main(capsys, "table", "--db", str(store.path), "--where", "method=kd", "--where", "status=ok")
    assert code == 2 and "all 2 matching runs are debug runs" in err


def test_unknown_format_is_refused(store):
    with pytest.raises(ReportError, match="unknown format"):
        render(build_table(store.frame(), columns=["quality.f1"]), "docx")


@pytest.mark.parametrize(
    ("value", "text"),
    [(0.812345, "0.8123"), (35.2139, "35.21"), (498.93, "498.9"), (123456.7, "123457"), (1e-05, "1.000e-05"),
     (3, "3"), (2.0, "2.000"), (11.0, "11.00"), (math.inf, "inf"), (math.nan, ""), (None, ""), ("kd", "kd"), (-0.5, "-0.5000")],
)
def test_format_number(value, text):
    assert format_number(value) == text


def test_console_script_is_declared():
    assert shutil.which("compbench-report") or Path(sys.executable).with_name("compbench-report").exists()
