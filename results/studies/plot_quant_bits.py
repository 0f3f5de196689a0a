"""Plot a low-bit QAT study from a compbench results store: metric vs bit-width, mean ± std over seeds.

    python results/studies/plot_quant_bits.py --db results/study2/compbench.db \
        --sweep-id study2_generative_low_bits --out results/studies/study2_low_bits.png

One panel per metric (default: test perplexity and token-level ECE); one line per
QAT variant (``qat`` by quantizer; ``contrastive_qat`` and its two ablations, told apart by
``method.contrastive`` and ``method.dynamic_scaling``), x = the weight/embedding bits of W-E-A
(activations are 8 bits in every arm); the full-precision model (``method=none``) is the dashed
line with its ± std band. Only ``status=ok`` rows are used; the pretraining row is left out.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402

from study_plots import save_figure, sweep_rows  # noqa: E402 (beside this script)

LABELS = {"quality.ppl": "test perplexity", "calib.ece": "ECE (token level)",
          "quality.token_accuracy": "next-token accuracy"}
LOG_SCALE: set[str] = set()  # metrics drawn on a log axis (none by default)


def variant(row: pd.Series) -> str:
    """A readable name for a QAT arm from its method columns."""
    if row["method"] == "qat":
        return f"QAT, {str(row['method.quantizer']).upper()}"
    if row["method"] == "contrastive_qat":
        if not bool(row.get("method.contrastive", True)):
            return "contrastive_qat w/o contrastive loss"
        if not bool(row.get("method.dynamic_scaling", True)):
            return f"contrastive_qat w/ {str(row['method.quantizer']).upper()} instead of dynamic scaling"
        return "contrastive_qat"
    return str(row["method"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--db", type=Path, required=True)
    parser.add_argument("--sweep-id", required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--metrics", default="quality.ppl,calib.ece")
    args = parser.parse_args()
    metrics = args.metrics.split(",")
    frame = sweep_rows(args.db, args.sweep_id)
    frame = frame[frame["task"] != "pretrain"].copy()
    base = frame[frame["method"] == "none"]
    quant = frame[frame["method"] != "none"].copy()
    quant["variant"] = quant.apply(variant, axis=1)
    quant["bits"] = quant["method.w_bits"].astype(int)
    fig, axes = plt.subplots(1, len(metrics), figsize=(6 * len(metrics), 4.5), squeeze=False)
    for ax, metric in zip(axes[0], metrics):
        for name in sorted(quant["variant"].unique()):
            stats = quant[quant["variant"] == name].groupby("bits")[metric].agg(["mean", "std"]).reset_index()
            ax.errorbar(stats["bits"], stats["mean"], yerr=stats["std"].fillna(0), fmt="-o", capsize=3,
                        label=name)
        if not base.empty:
            mean, std = base[metric].mean(), base[metric].std()
            ax.axhline(mean, color="k", ls="--", lw=1, label="full precision (teacher)")
            ax.axhspan(mean - std, mean + std, color="k", alpha=0.08)
        ax.set_xticks([2, 4, 8])
        ax.set_xticklabels(["2-2-8", "4-4-8", "8-8-8"])
        ax.invert_xaxis()
        ax.set_xlabel("W-E-A bits")
        ax.set_ylabel(LABELS.get(metric, metric))
        if metric in LOG_SCALE:
            ax.set_yscale("log")
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=7)
    save_figure(fig, frame, args.sweep_id, args.out)


if __name__ == "__main__":
    main()
