"""Plot a pruning study from a compbench results store: metric vs sparsity, mean ± std over seeds.

    python results/studies/plot_pruning.py --db results/study1/compbench.db \
        --sweep-id study1_small_made_smaller --out results/studies/study1_pruning.png

One panel per metric (default: test F1, zero-shot F1 over the OOD languages, ECE); one line per
(model, when) of ``prune_magnitude`` rows; the same model's fine-tuned fp32 baseline
(``method=none``) is drawn at sparsity 0. Only ``status=ok`` rows are used.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from study_plots import save_figure, sweep_rows  # noqa: E402 (beside this script)

LABELS = {"quality.f1": "test F1", "robust.ood.mean_f1": "zero-shot F1 (mean of OOD languages)",
          "calib.ece": "ECE (token level)"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--db", type=Path, required=True)
    parser.add_argument("--sweep-id", required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--metrics", default="quality.f1,robust.ood.mean_f1,calib.ece")
    args = parser.parse_args()
    metrics = args.metrics.split(",")
    frame = sweep_rows(args.db, args.sweep_id)
    fig, axes = plt.subplots(1, len(metrics), figsize=(5 * len(metrics), 4), squeeze=False)
    for ax, metric in zip(axes[0], metrics):
        for model in sorted(frame["model"].unique()):
            rows = frame[frame["model"] == model]
            base = rows[rows["method"] == "none"][metric]
            pruned = rows[rows["method"] == "prune_magnitude"]
            for when, style in (("after", "-o"), ("before", "--s")):
                part = pruned[pruned["method.when"] == when]
                if part.empty:
                    continue
                stats = part.groupby("method.sparsity")[metric].agg(["mean", "std"]).reset_index()
                xs = [0.0, *stats["method.sparsity"].tolist()] if when == "after" else stats["method.sparsity"].tolist()
                ys = [base.mean(), *stats["mean"].tolist()] if when == "after" else stats["mean"].tolist()
                es = [base.std(), *stats["std"].tolist()] if when == "after" else stats["std"].tolist()
                ax.errorbar(xs, ys, yerr=es, fmt=style, capsize=3, label=f"{model}, prune {when} fine-tuning")
        ax.set_xlabel("sparsity (fraction of Linear weights zeroed; embeddings, head kept)")
        ax.set_ylabel(LABELS.get(metric, metric))
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=7)
    save_figure(fig, frame, args.sweep_id, args.out)


if __name__ == "__main__":
    main()
