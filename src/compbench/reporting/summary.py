"""What ``compbench`` prints when a run or a sweep ends: the headline figures, not the whole row.

A run's summary gives the main quality metric next to the fp32 teacher's (the ``method=none``
row of the same teacher, when the store has one), calibration, robustness and efficiency with
units, where the row went, and the ``compbench-report`` command that shows all of it. A sweep's
summary is one line per job, side by side.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Sequence

import pandas as pd

from compbench.reporting.numbers import percent, readable

#: Rows stored before the ``main_metric`` column existed (before 2026-11-29) do not name their
#: main metric; for them only, the main metrics the task kinds had then, in lookup order. Rows
#: name it themselves now (``Task.main_metric``), so a new task never needs adding here.
LEGACY_MAIN_METRICS = ("quality.f1", "quality.ppl", "quality.rougeL")


def row_main_metric(row: Mapping[str, Any]) -> str | None:
    """The row's main quality column (its ``main_metric``, e.g. ``quality.f1``), None when the
    row has no value there (a failed run)."""
    named = row.get("main_metric")
    if named:
        return str(named) if row.get(str(named)) is not None else None
    return next((m for m in LEGACY_MAIN_METRICS if row.get(m) is not None), None)


def run_summary(row: Mapping[str, Any], teacher_row: Mapping[str, Any] | None, db_path: Path) -> str:
    """A dozen lines: identity, the four groups' headline figures, and where to look next."""
    label = f"{row.get('model')} · {row.get('task')}{' · ' + row['lang'] if row.get('lang') else ''} · " \
            f"{row.get('method') or '?'} · seed {row.get('seed')}"
    lines = [f"compbench: {label}: {row.get('status')} in {readable(row.get('duration_s'), 3)} s"
             + (f" (teacher {'reused from cache' if row.get('teacher_reused') else 'fine-tuned'})"
                if row.get("teacher_hash") else "")]
    if row.get("status") != "ok":
        lines.append(f"  error        {row.get('error')}")
    else:
        main = row_main_metric(row)
        if main is not None:
            name = main.split(".", 1)[1]
            quality = f"{name} {readable(row[main])}"
            if row.get("method") == "none":
                quality += "   (this is the fp32 teacher)"
            elif teacher_row is not None and teacher_row.get(main) is not None:
                quality += f"   (fp32 teacher {readable(teacher_row[main])}, run {str(teacher_row['run_id'])[:15]})"
            elif row.get("method") != "none" and row.get("teacher_hash"):
                quality += "   (fp32 teacher: not in the store; the same command with method=none adds it)"
            others = [f"{k.split('.', 1)[1]} {readable(row[k])}" for k in sorted(row)  # per-type F1s: in the row
                      if k.startswith("quality.") and k != main and not k.startswith("quality.f1_")
                      and row[k] is not None]
            lines.append(f"  quality      {quality}" + (f"; {', '.join(others)}" if others else ""))
        if row.get("calib.ece") is not None:
            calib = f"ECE {readable(row['calib.ece'], 3)}, NLL {readable(row.get('calib.nll'), 3)}"
            if row.get("calib.ece_ts") is not None:
                calib += f"; after temperature scaling (T={readable(row.get('calib.temperature'), 3)}) " \
                         f"ECE {readable(row['calib.ece_ts'], 3)}"
            lines.append(f"  calibration  {calib}")
        drops = [k for k in row if k.startswith("robust.") and k.endswith(".drop") and row[k] is not None]
        if row.get("robust.mean_drop") is not None:
            if main == "quality.ppl":  # LM drops are differences of NLL (nats), not relative changes
                robust = f"mean NLL increase {row['robust.mean_drop']:+.3f} nats over {len(drops)} perturbations"
            else:
                robust = f"mean drop {percent(row['robust.mean_drop'])} of {main.split('.', 1)[1] if main else 'the main metric'} " \
                         f"over {len(drops)} perturbations (+ = worse)"
            ood = [k for k in row if k.startswith("robust.ood.mean_") and row[k] is not None]
            if ood:
                robust += f"; out-of-distribution mean {ood[0].rsplit('_', 1)[1]} {readable(row[ood[0]])}"
            lines.append(f"  robustness   {robust}")
        if row.get("eff.size_mb") is not None:
            eff = f"{readable(row['eff.size_mb'], 4)} MB on disk ({readable(row.get('eff.compression_ratio'), 3)}x smaller than fp32)"
            if row.get("eff.latency_ms_p50") is not None:
                eff += f", {readable(row['eff.latency_ms_p50'], 3)} ms per forward at batch 1 " \
                       f"({readable(row.get('eff.speedup'), 3)}x the fp32 teacher's speed, {row.get('eff.mode')}, " \
                       f"{row.get('eff.threads')} thread{'s' if row.get('eff.threads') != 1 else ''})"
            lines.append(f"  efficiency   {eff}; {readable(row.get('eff.params'))} parameters")
    lines.append(f"  row          {db_path} (run {row.get('run_id')})")
    if row.get("run_dir"):
        lines.append(f"  run folder   {row['run_dir']}")
    lines.append(f"  more         compbench-report show {str(row.get('run_id'))[:15]}   ·   compbench-report table")
    return "\n".join(lines)


#: Columns of the end-of-sweep table, when present: identity, then the headline figures.
SWEEP_COLUMNS = ("method", "seed", "status", "MAIN", "calib.ece", "robust.mean_drop", "eff.size_mb",
                 "eff.compression_ratio", "eff.speedup")


def sweep_table(rows: Sequence[Mapping[str, Any]]) -> str:
    """One line per job of a sweep, side by side: method parameters, main metric, headline figures."""
    if not rows:
        return "(no rows)"
    def varies(key: str) -> bool:
        return len({str(r.get(key)) for r in rows}) > 1

    # Only what tells the jobs apart: parameters equal in every row are noise here.
    params = sorted({k for r in rows for k in r if k.startswith("method.") and r.get(k) not in (None, "")
                     and (varies(k) or len(rows) == 1)})
    varying = [k for k in ("model", "task", "lang") if varies(k)]
    header = [*varying, "method", *[p.removeprefix("method.") for p in params], "seed", "status"]
    metrics = []
    for column in SWEEP_COLUMNS[3:]:
        if column == "MAIN":
            mains = sorted({m for r in rows if (m := row_main_metric(r))})
            metrics += mains
        elif any(r.get(column) is not None for r in rows):
            metrics.append(column)
    header += [m.split(".", 1)[1] for m in metrics]
    body = []
    for r in rows:
        cells = [readable(r.get(k)) for k in (*varying, "method", *params, "seed", "status")]
        cells += [readable(r.get(m), 4) for m in metrics]
        body.append(cells)
    return pd.DataFrame(body, columns=header).to_string(index=False)
