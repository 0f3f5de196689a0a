"""compbench-report wandb: the sweep's tables and plots in an offline W&B run, read back from
its transaction log and media files (wandb's own record schema, tests/tracking/wandb_reader.py)."""

import json
import sys
from pathlib import Path

import pandas as pd
from report_stores import report, study_store  # noqa: F401 (fixtures)

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tracking"))
from wandb_reader import records  # noqa: E402


def test_sweep_table_and_plots_logged_offline(study_store, tmp_path):
    with __import__("sqlite3").connect(study_store.path) as conn:  # make half of the runs one sweep
        conn.execute("UPDATE runs SET sweep_id = 'bits' WHERE task = 'smoke_lm'")
    done = report("wandb", "--db", str(study_store.path), "--sweep-id", "bits", "--out", str(tmp_path / "wb"))
    assert done.returncode == 0, done.stderr
    (run_dir,) = (tmp_path / "wb" / "wandb").glob("offline-run-*")
    assert str(run_dir) in done.stdout and "logged 8 runs of sweep bits" in done.stdout

    history, run = {}, None
    for record in records(next(run_dir.glob("run-*.wandb"))):
        kind = record.WhichOneof("record_type")
        if kind == "history":
            for item in record.history.item:
                history[item.key or ".".join(item.nested_key)] = json.loads(item.value_json)
        elif kind == "run":
            run = record.run
    assert run.run_group == "bits" and run.job_type == "report"

    table = json.loads((run_dir / "files" / history["runs.path"]).read_text())
    frame = pd.DataFrame(table["data"], columns=table["columns"])
    expected = study_store.frame().query("task == 'smoke_lm'")
    assert sorted(frame["run_id"]) == sorted(expected["run_id"]) and history["runs.nrows"] == 8
    assert frame.set_index("run_id")["quality.ppl"].to_dict() == expected.set_index("run_id")["quality.ppl"].to_dict()
    summary = json.loads((run_dir / "files" / history["summary.path"]).read_text())
    assert "quality.ppl_mean" in summary["columns"] and len(summary["data"]) == 4  # none + 3 bit-widths
    images = {k.split(".")[0] for k in history if k.startswith("plots/") and k.endswith("._type")}
    assert images == {"plots/size_smoke_lm", "plots/latency_smoke_lm", "plots/bits_smoke_lm", "plots/reliability_smoke_lm"}
    for name in images:
        assert (run_dir / "files" / history[f"{name}.path"]).stat().st_size > 5_000


def test_unknown_sweep_is_one_sentence(study_store, tmp_path):
    done = report("wandb", "--db", str(study_store.path), "--sweep-id", "nope", "--out", str(tmp_path))
    assert done.returncode == 2 and done.stderr == (
        f"compbench-report: error: no runs with sweep_id 'nope' in {study_store.path}; sweep ids there: none.\n")
