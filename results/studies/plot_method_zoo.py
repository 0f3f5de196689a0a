"""Plot a method-zoo study from a compbench results store: every arm's quality vs size, and its calibration.

    python results/studies/plot_method_zoo.py --db results/study3/compbench.db \
        --sweep-id study3_minilm_conll2003 --out results/studies/study3_method_zoo.png

Left: the main quality metric (default ``quality.f1``) against the exported size (``eff.size_mb``,
log scale), one point per arm, mean ± std over seeds. Right: ECE before and after temperature
scaling (``calib.ece``, ``calib.ece_ts``) per arm. An arm is the method plus the parameters that
tell its rows apart (sparsity, bits, student depth, head/FFN sparsity). Only ``status=ok`` rows.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from study_plots import save_figure, sweep_rows  # noqa: E402 (beside this script)

#: Parameter columns that name an arm, with how they are shown.
ARM_PARAMS = {"method.sparsity": "{:.0%}", "method.w_bits": "{:.0f}-bit", "method.student_layers": "{:.0f} layers",
              "method.head_sparsity": "heads {:.0%}", "method.ffn_sparsity": "FFN {:.0%}"}


def arm(row: pd.Series) -> str:
    """``method`` plus the arm-defining parameters present in the row."""
    parts = [str(row["method"])]
    for column, fmt in ARM_PARAMS.items():
        value = row.get(column)
        if value is not None and not (isinstance(value, float) and np.isnan(value)):
            parts.append(fmt.format(float(value)))
    return " ".join(parts)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--db", type=Path, required=True)
    parser.add_argument("--sweep-id", required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--metric", default="quality.f1")
    args = parser.parse_args()
    frame = sweep_rows(args.db, args.sweep_id)
    frame["arm"] = frame.apply(arm, axis=1)
    stats = frame.groupby("arm").agg(
        q_mean=(args.metric, "mean"), q_std=(args.metric, "std"), size=("eff.size_mb", "mean"),
        ece=("calib.ece", "mean"), ece_std=("calib.ece", "std"),
        ece_ts=("calib.ece_ts", "mean"), ece_ts_std=("calib.ece_ts", "std"),
    ).sort_values("q_mean", ascending=False)
    fig, (left, right) = plt.subplots(1, 2, figsize=(13, 5))
    for name, row in stats.iterrows():
        left.errorbar(row["size"], row["q_mean"], yerr=row["q_std"], fmt="o", capsize=3)
        left.annotate(name, (row["size"], row["q_mean"]), fontsize=7, xytext=(4, 3), textcoords="offset points")
    left.set_xscale("log")
    left.set_xlabel("exported size (MB, log scale)")
    left.set_ylabel(f"test {args.metric}")
    left.grid(alpha=0.3)
    ys = np.arange(len(stats))
    right.barh(ys - 0.2, stats["ece"], 0.4, xerr=stats["ece_std"], label="ECE")
    right.barh(ys + 0.2, stats["ece_ts"], 0.4, xerr=stats["ece_ts_std"], label="ECE after temperature scaling")
    right.set_yticks(ys)
    right.set_yticklabels(stats.index, fontsize=8)
    right.invert_yaxis()
    right.set_xlabel("ECE (token level)")
    right.legend(fontsize=8)
    right.grid(alpha=0.3, axis="x")
    save_figure(fig, frame, args.sweep_id, args.out)


if __name__ == "__main__":
    main()
