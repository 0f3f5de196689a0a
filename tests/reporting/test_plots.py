"""Plots: every kind renders from a small store into a non-blank image; colours stay fixed per
method; the Pareto front is the set of non-dominated points; bad requests are one sentence."""

import numpy as np
import pytest
from report_stores import report, study_store  # noqa: F401 (fixtures)

from compbench.reporting.plots import KINDS, method_colors, pareto_front, plot
from compbench.reporting.runs import load_runs
from compbench.reporting.selection import ReportError


def non_blank(path) -> bool:
    """More than 1% of the pixels differ clearly from the background (white)."""
    import matplotlib.image

    image = matplotlib.image.imread(str(path))[..., :3]
    return float((np.abs(image - 1.0).max(axis=-1) > 0.1).mean()) > 0.01


def test_every_kind_renders_non_blank(study_store, tmp_path):
    runs = load_runs(study_store.path)
    written = plot(runs, "all", tmp_path / "plots")
    names = sorted(p.name for p in written)
    assert names == sorted([*(f"{k}_ner.png" for k in KINDS if k != "bits"),  # NER: a sparsity sweep
                            *(f"{k}_smoke_lm.png" for k in ("size", "latency", "bits", "reliability"))])
    for path in written:
        assert path.stat().st_size > 5_000 and non_blank(path), path


@pytest.mark.parametrize("fmt", ["svg", "pdf"])
def test_vector_formats(study_store, tmp_path, fmt):
    (path,) = plot(load_runs(study_store.path), "bits", tmp_path, fmt)
    head = path.read_bytes()[:5]
    assert head == (b"%PDF-" if fmt == "pdf" else b"<?xml")


def test_pareto_front_is_the_non_dominated_points():
    x, y = [1.0, 2.0, 3.0, 2.5, 0.5], [0.5, 0.8, 0.9, 0.7, 0.1]
    brute = [i for i in range(5) if not any(x[j] <= x[i] and y[j] >= y[i] and (x[j], y[j]) != (x[i], y[i])
                                             for j in range(5))]
    assert sorted(pareto_front(x, y, True)) == sorted(brute) == [0, 1, 2, 4]
    assert pareto_front(x, [-v for v in y], False) == pareto_front(x, y, True)


def test_colours_fixed_per_method_whatever_the_selection():
    everything = method_colors(["kd", "none", "qat", "prune_magnitude"])
    subset = method_colors(["qat", "kd", "none", "prune_magnitude"])
    assert everything == subset and len(set(everything.values())) == 4


def test_cli_plot_and_one_sentence_errors(study_store, tmp_path):
    done = report("plot", "robustness", "--db", str(study_store.path), "--out", str(tmp_path / "p"))
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().endswith("robustness_ner.png") and non_blank(done.stdout.strip())
    nothing = report("plot", "sparsity", "--db", str(study_store.path), "--where", "task=smoke_lm", "--out", str(tmp_path))
    assert nothing.returncode == 2 and nothing.stderr.count("\n") == 1
    assert "no sparsity plot can be drawn: none of the 8 selected runs has a method.*sparsity column" in nothing.stderr
    unmatched = report("plot", "size", "--db", str(study_store.path), "--where", "model=nope", "--out", str(tmp_path))
    assert unmatched.returncode == 2 and "no runs match model=nope" in unmatched.stderr
    with pytest.raises(ReportError, match="unknown plot kind"):
        plot(load_runs(study_store.path), "pie", tmp_path)
