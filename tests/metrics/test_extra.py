"""evaluation.extra_metrics: HF evaluate metrics on saved predictions, offline via a local script."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest

from compbench.errors import ConfigError
from compbench.metrics.extra import extra_quality, load_extra_metrics
from compbench.metrics.registry import spec_for

pytest.importorskip("evaluate")
SCRIPT = Path(__file__).parent / "evaluate_scripts" / "token_match.py"
NER_TASK = SimpleNamespace(kind="token_classification", has_saved_predictions=True)


def test_local_metric_script_gives_quality_ext_columns():
    metrics = load_extra_metrics([str(SCRIPT), {"metric": str(SCRIPT), "name": "scaled", "kwargs": {"scale": 2.0}}],
                                 NER_TASK)
    preds = [["B-PER", "O", "O"], ["O", "B-LOC"]]
    refs = [["B-PER", "O", "B-ORG"], ["O", "B-LOC"]]
    row = extra_quality(metrics, preds, refs)
    expected = 4 / 5  # plain count of equal tags
    assert row == {"quality.ext.token_match.accuracy": pytest.approx(expected),
                   "quality.ext.token_match.detail.n": 5.0,
                   "quality.ext.scaled.accuracy": pytest.approx(2 * expected),
                   "quality.ext.scaled.detail.n": 5.0}
    assert all(spec_for(column) is not None and spec_for(column).higher_is_better is None for column in row)
    # Strings (summaries) go through the same script.
    text = load_extra_metrics([str(SCRIPT)], SimpleNamespace(kind="summarization", has_saved_predictions=True))
    assert extra_quality(text, ["a b", "c"], ["a b", "d"])["quality.ext.token_match.accuracy"] == 0.5


@pytest.mark.parametrize(("specs", "task", "match"), [
    (["/nonexistent/metric.py"], NER_TASK, "no metric script"),
    ([str(SCRIPT), str(SCRIPT)], NER_TASK, "twice"),
    ([{"name": "x"}], NER_TASK, "mapping with a 'metric' key"),
    ([str(SCRIPT)], SimpleNamespace(kind="causal_lm", has_saved_predictions=False), "per-document NLLs"),
])
def test_bad_extra_metrics_are_refused_in_one_sentence(specs, task, match):
    with pytest.raises(ConfigError, match=match):
        load_extra_metrics(specs, task)


def test_no_extra_metrics_loads_nothing():
    assert load_extra_metrics([], None) == [] and extra_quality([], [], []) == {}


def test_cli_run_adds_the_extra_columns_from_saved_predictions(run_compbench):
    from compbench.tasks.ner import read_conll_predictions

    _, rows = run_compbench("debug=fast", "evaluation.robustness.enabled=false", "evaluation.efficiency.repeats=2",
                            f"evaluation.extra_metrics=[{SCRIPT}]")
    row = rows[0]
    assert row["status"] == "ok", row["error"]
    gold, pred = read_conll_predictions(Path(row["run_dir"]) / "predictions_test.conll")
    tags = [(p, g) for ps, gs in zip(pred, gold) for p, g in zip(ps, gs)]
    assert row["quality.ext.token_match.accuracy"] == pytest.approx(sum(p == g for p, g in tags) / len(tags))
    assert "quality.f1" in row  # compbench's own metrics stay


def test_cli_refuses_an_extra_metric_for_language_models_before_any_work(run_compbench):
    proc, rows = run_compbench("model=tiny_gpt2", "task=smoke_lm", f"evaluation.extra_metrics=[{SCRIPT}]", check=False)
    assert proc.returncode != 0 and "per-document NLLs" in proc.stdout + proc.stderr
    assert not any(r.get("teacher_hash") for r in rows)  # refused before the teacher was built
