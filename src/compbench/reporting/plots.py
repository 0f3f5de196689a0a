"""Publication plots of the store with matplotlib: trade-offs, sweeps, calibration, robustness.

Kinds (``compbench-report plot KIND``):

* ``size``, ``latency``: main quality metric vs model size / batch-1 latency, one point per
  configuration (mean over seeds, std as error bars), and the Pareto front;
* ``sparsity``, ``bits``: main quality metric vs sparsity / weight bit-width per method, seed
  error bars, the uncompressed baseline as a horizontal line;
* ``reliability``: accuracy vs confidence per bin (the bins of ``calib.ece``) for chosen runs;
* ``robustness``: relative drop of the main metric per perturbation, per method.

One figure per task (the quality metric differs between tasks). A method has the same colour in
every plot: colours follow the sorted method names of the whole store, not of one selection.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from compbench.metrics import registry
from compbench.reporting.selection import ReportError, default_group_by, main_metric

KINDS = ("size", "latency", "sparsity", "bits", "reliability", "robustness")
FORMATS = ("png", "svg", "pdf")
#: Axis labels with units; other columns fall back to the registry's description.
LABELS = {
    "quality.f1": "entity F1 (micro, 0-1)",
    "quality.ppl": "perplexity (lower is better)",
    "quality.rougeL": "ROUGE-L F1 (0-1)",
    "quality.rouge1": "ROUGE-1 F1 (0-1)",
    "quality.rouge2": "ROUGE-2 F1 (0-1)",
    "quality.token_accuracy": "next-token accuracy (0-1)",
    "eff.size_mb": "model size on disk (MB = 10^6 bytes)",
    "eff.latency_ms_p50": "median forward latency, batch 1 (ms)",
    "sparsity": "sparsity (fraction of weights set to zero)",
    "w_bits": "weight bit-width (bits)",
}
AXES = {"size": "eff.size_mb", "latency": "eff.latency_ms_p50"}
SWEPT = {"sparsity": "sparsity", "bits": "w_bits"}
DPI = 200


def label(column: str) -> str:
    """Axis label of a column, with its unit."""
    if column in LABELS:
        return LABELS[column]
    spec = registry.spec_for(column)
    return spec.description if spec is not None and spec.description else column


def method_colors(methods: Sequence[str]) -> dict[str, tuple]:
    """A fixed colour per method name: the sorted names of the whole store on tab10 (then tab20)."""
    import matplotlib

    names = sorted({str(m) for m in methods})
    palette = matplotlib.colormaps["tab10" if len(names) <= 10 else "tab20"]
    return {name: palette(i % palette.N) for i, name in enumerate(names)}


MARKERS = "osD^vP*X<>"


def _markers(models: Sequence[str]) -> dict[str, str]:
    return {name: MARKERS[i % len(MARKERS)] for i, name in enumerate(sorted({str(m) for m in models}))}


def pareto_front(x: Sequence[float], y: Sequence[float], higher_is_better: bool) -> list[int]:
    """Indices of the points no other point beats on both axes (smaller x, better y), by x."""
    order = sorted(range(len(x)), key=lambda i: (x[i], -y[i] if higher_is_better else y[i]))
    front, best = [], -math.inf if higher_is_better else math.inf
    for i in order:
        if (y[i] > best) if higher_is_better else (y[i] < best):
            front.append(i)
            best = y[i]
    return front


def _setup():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    plt.rcParams.update({"font.size": 9, "axes.spines.top": False, "axes.spines.right": False,
                         "figure.constrained_layout.use": True, "svg.hashsalt": "compbench"})
    return plt


def _config_means(part: pd.DataFrame, columns: Sequence[str]) -> pd.DataFrame:
    """Per configuration (model, task, lang, method, swept parameters): mean, std and n of columns."""
    keys = default_group_by(part)
    grouped = part.groupby(keys, dropna=False, sort=True)[list(columns)]
    means, stds = grouped.mean(), grouped.std(ddof=1)
    out = means.add_suffix("_mean").join(stds.add_suffix("_std")).reset_index()
    out["n"] = grouped.size().values
    return out


def _legend(ax, colors: dict, markers: dict, methods: set, models: set, extra: Sequence = ()) -> None:
    from matplotlib.lines import Line2D

    handles = [Line2D([], [], color=colors[m], marker="o", linestyle="", label=m) for m in sorted(methods)]
    if len(models) > 1:
        handles += [Line2D([], [], color="0.3", marker=markers[m], linestyle="", label=f"model {m}") for m in sorted(models)]
    ax.legend(handles=[*handles, *extra], fontsize=7, frameon=False, loc="best")


def _title(ax, task: str, kind: str) -> None:
    ax.set_title(f"{task}: {kind}", fontsize=9)


def _tradeoff(plt, part: pd.DataFrame, metric: str, kind: str, colors, markers):
    axis = AXES[kind]
    if axis not in part.columns or part[axis].notna().sum() == 0:
        return None
    stats = _config_means(part, [metric, axis]).dropna(subset=[f"{metric}_mean", f"{axis}_mean"])
    if stats.empty:
        return None
    fig, ax = plt.subplots(figsize=(4.8, 3.4))
    for _, row in stats.iterrows():
        ax.errorbar(row[f"{axis}_mean"], row[f"{metric}_mean"],
                    yerr=None if pd.isna(row[f"{metric}_std"]) else row[f"{metric}_std"],
                    color=colors[str(row["method"])], marker=markers[str(row["model"])], markersize=6,
                    capsize=2, linestyle="")
    higher = bool(registry.spec_for(metric).higher_is_better)
    x, y = stats[f"{axis}_mean"].tolist(), stats[f"{metric}_mean"].tolist()
    front = pareto_front(x, y, higher)
    from matplotlib.lines import Line2D

    ax.step([x[i] for i in front], [y[i] for i in front], where="post", color="0.2", linestyle="--", linewidth=1)
    ax.scatter([x[i] for i in front], [y[i] for i in front], s=110, facecolors="none", edgecolors="0.2",
               linewidths=1, zorder=3)
    ax.set_xlabel(label(axis))
    ax.set_ylabel(label(metric))
    _title(ax, str(part["task"].iloc[0]), f"{label(metric).split(' (')[0]} vs {kind}")
    _legend(ax, colors, markers, set(stats["method"].astype(str)), set(stats["model"].astype(str)),
            [Line2D([], [], color="0.2", linestyle="--", marker="o", markerfacecolor="none", markersize=9,
                    label="Pareto front")])
    return fig


def _swept_column(part: pd.DataFrame, name: str) -> str | None:
    pattern = re.compile(rf"^method\.(?:[^.]+\.)?{name}$")
    found = [c for c in part.columns if pattern.match(c) and part[c].notna().any()]
    return found[0] if found else None


def _sweep(plt, part: pd.DataFrame, metric: str, kind: str, colors, markers):
    column = _swept_column(part, SWEPT[kind])
    if column is None:
        return None
    swept = part[part[column].notna()]
    swept = swept.assign(**{column: pd.to_numeric(swept[column], errors="coerce")}).dropna(subset=[column, metric])
    if swept.empty:
        return None
    fig, ax = plt.subplots(figsize=(4.8, 3.4))
    from matplotlib.lines import Line2D

    extra = []
    for (model, method), group in swept.groupby(["model", "method"], sort=True):
        stats = group.groupby(column)[metric].agg(["mean", "std", "count"]).reset_index()
        ax.errorbar(stats[column], stats["mean"], yerr=stats["std"].fillna(0.0), color=colors[str(method)],
                    marker=markers[str(model)], capsize=3, linewidth=1.2, markersize=5)
    baseline = part[(part["method"] == "none")][metric].dropna()
    if len(baseline):
        ax.axhline(baseline.mean(), color=colors.get("none", "0.5"), linestyle=":", linewidth=1)
        extra.append(Line2D([], [], color=colors.get("none", "0.5"), linestyle=":",
                            label=f"none (uncompressed), n={len(baseline)}"))
    if kind == "bits":
        ax.set_xscale("log", base=2)
        ticks = sorted(swept[column].unique())
        ax.set_xticks(ticks, [f"{t:g}" for t in ticks])
    ax.set_xlabel(label(SWEPT[kind]))
    ax.set_ylabel(label(metric) + "; mean ± std over seeds")
    _title(ax, str(part["task"].iloc[0]), f"{label(metric).split(' (')[0]} vs {kind}")
    _legend(ax, colors, markers, set(swept["method"].astype(str)), set(swept["model"].astype(str)), extra)
    return fig


def _robustness(plt, part: pd.DataFrame, metric: str, colors, markers):
    drops = [c for c in part.columns if re.match(r"^robust\.[^.]+\.drop$", c) and part[c].notna().any()]
    if not drops:
        return None
    names = [c.split(".")[1] for c in drops]
    methods = sorted(part.loc[part[drops].notna().any(axis=1), "method"].astype(str).unique())
    fig, ax = plt.subplots(figsize=(max(4.8, 0.7 * len(names) * max(1, len(methods)) / 2 + 2), 3.4))
    width = 0.8 / len(methods)
    positions = np.arange(len(names))
    for k, method in enumerate(methods):
        rows = part[part["method"].astype(str) == method]
        means = [100 * rows[c].mean() for c in drops]
        stds = [100 * rows[c].std(ddof=1) if rows[c].notna().sum() > 1 else 0.0 for c in drops]
        ax.bar(positions + (k - (len(methods) - 1) / 2) * width, means, width, yerr=stds, capsize=2,
               color=colors[method], label=f"{method} (n={len(rows)})")
    ax.set_xticks(positions, names, rotation=30, ha="right")
    ax.axhline(0, color="0.3", linewidth=0.8)
    ax.set_ylabel(f"relative drop of {metric.split('.', 1)[1]} (%, + = worse)")
    ax.set_xlabel("perturbation of the test inputs")
    _title(ax, str(part["task"].iloc[0]), "robustness drop per perturbation")
    ax.legend(fontsize=7, frameon=False)
    return fig


def _reliability(plt, runs: pd.DataFrame, colors):
    from compbench.reporting.runs import reliability

    curves = []
    for _, run in runs.iterrows():
        if run.get("run_dir") is None or not (Path(run["run_dir"]) / "calibration.npz").is_file():
            continue
        curves.append((run, reliability(run["run_dir"])))
    if not curves:
        return None
    fig, ax = plt.subplots(figsize=(4.2, 4.0))
    ax.plot([0, 1], [0, 1], color="0.6", linestyle=":", linewidth=1, label="perfect calibration")
    for run, curve in curves:
        filled = curve[curve["tokens"] > 0]
        ece = run.get("calib.ece")
        ece_text = f", ECE {ece:.3f}" if isinstance(ece, float) and not math.isnan(ece) else ""
        ax.plot(filled["confidence"], filled["accuracy"], marker="o", markersize=3, linewidth=1.2,
                color=colors[str(run["method"])], label=f"{run['method']} {run['run_id'][-8:]}{ece_text}")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_xlabel("mean confidence in bin (top-1 probability)")
    ax.set_ylabel("accuracy in bin")
    ax.set_title(f"{runs['task'].iloc[0]}: reliability diagram (15 equal-width bins)", fontsize=9)
    ax.legend(fontsize=7, frameon=False, loc="upper left")
    return fig


def plot(runs: pd.DataFrame, kind: str, out_dir: str | Path, fmt: str = "png", *,
         all_methods: Sequence[str] | None = None, run_ids: Sequence[str] | None = None) -> list[Path]:
    """Draw ``kind`` (one of ``KINDS``, or ``all``) from ``runs`` (ok runs) into ``out_dir``.

    Args:
        runs: the selected runs (``load_runs`` or ``ResultsStore.frame()`` filtered).
        kind: a plot kind, or ``all`` for every kind that has data.
        out_dir: folder for the files (``<kind>_<task>.<fmt>``).
        fmt: png, svg or pdf.
        all_methods: every method name of the store, so colours agree across selections.
        run_ids: runs of the reliability diagram (default: the latest run of each method per task).

    Returns:
        the written files.

    Raises:
        ReportError: unknown kind or format, or no run has the data this kind needs.
    """
    if kind not in (*KINDS, "all"):
        raise ReportError(f"unknown plot kind {kind!r}; choose one of {', '.join(KINDS)} or all.")
    if fmt not in FORMATS:
        raise ReportError(f"unknown image format {fmt!r}; choose one of {', '.join(FORMATS)}.")
    if runs.empty:
        raise ReportError("no runs to plot; loosen --where or run an experiment first.")
    plt = _setup()
    colors = method_colors(list(all_methods or []) + runs["method"].astype(str).tolist())
    markers = _markers(runs["model"].astype(str).tolist())
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    kinds = KINDS if kind == "all" else (kind,)
    for task, part in runs.groupby("task", sort=True):
        metric = main_metric(part)
        for current in kinds:
            fig = None
            if current == "reliability":
                chosen = part[part["run_id"].isin(run_ids)] if run_ids else \
                    part.sort_values("started_at").groupby("method").tail(1)
                fig = _reliability(plt, chosen, colors)
            elif metric is None:
                continue
            elif current in AXES:
                fig = _tradeoff(plt, part, metric, current, colors, markers)
            elif current in SWEPT:
                fig = _sweep(plt, part, metric, current, colors, markers)
            else:
                fig = _robustness(plt, part, metric, colors, markers)
            if fig is None:
                continue
            path = out_dir / f"{current}_{task}.{fmt}"
            fig.savefig(path, dpi=DPI, metadata={"Software": None} if fmt == "png" else None)
            plt.close(fig)
            written.append(path)
    if not written:
        needs = {"size": "eff.size_mb", "latency": "eff.latency_ms_p50", "sparsity": "a method.*sparsity column",
                 "bits": "a method.*w_bits column", "reliability": "a run directory with calibration.npz",
                 "robustness": "robust.<perturbation>.drop columns"}
        what = needs.get(kind, "the columns any plot needs")
        raise ReportError(f"no {kind} plot can be drawn: none of the {len(runs)} selected runs has {what} "
                          "with a quality metric.")
    return written
