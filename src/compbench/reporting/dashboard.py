"""The offline dashboard: one self-contained HTML file with interactive plots and a sortable table.

Plotting library: plotly.js, inlined from the ``plotly`` Python package (``get_plotlyjs()``, the
same bundle ``fig.write_html(include_plotlyjs=True)`` embeds). Chosen because it is a maintained
library whose single minified bundle works from ``file://`` with no network (Vega-Lite needs three
runtimes - vega, vega-lite, vega-embed - kept in step by hand; Bokeh's standalone output also
needs its separate JS inlined per version), its hover labels show arbitrary text per point (run_id,
config, metrics), and the same package serves Python users in notebooks. The file is ~5 MB
because the bundle is; nothing is fetched when it opens.

The plots are drawn in the browser by plotly from the embedded rows, so that the filters
(model, task, method) redraw every plot, Pareto front and mean line from the filtered rows; the
only code written here is that glue and the table sort (a few lines each; no plotting code).
"""

from __future__ import annotations

import datetime as dt
import json
import math
import re
from collections.abc import Sequence
from importlib import resources
from pathlib import Path
from typing import Any

import pandas as pd

from compbench.metrics import registry
from compbench.reporting.plots import LABELS, label, method_colors
from compbench.reporting.selection import CONFIG_KEYS, HEADLINE_METRICS, main_metric, main_metrics, varying_method_params

#: Runs per task whose reliability curve is embedded (the latest ones): bounds the file size.
MAX_RELIABILITY_RUNS = 24


def _hex(rgba: tuple) -> str:
    return "#" + "".join(f"{int(round(255 * c)):02x}" for c in rgba[:3])


def _json_value(value: Any) -> Any:
    if value is None:
        return None
    if isinstance(value, Path):
        return str(value)
    if hasattr(value, "item"):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if not isinstance(value, str) and pd.isna(value):
        return None
    return value


def _swept(part: pd.DataFrame, name: str) -> str | None:
    pattern = re.compile(rf"^method\.(?:[^.]+\.)?{name}$")
    return next((c for c in part.columns if pattern.match(c) and part[c].notna().any()), None)


def dashboard_data(runs: pd.DataFrame, all_methods: Sequence[str] = ()) -> dict[str, Any]:
    """The JSON the page is drawn from: rows, columns, labels, directions, colours, curves."""
    from compbench.reporting.runs import reliability

    params = varying_method_params(runs)
    drops = sorted(c for c in runs.columns if re.match(r"^robust\.[^.]+\.drop$", c) and runs[c].notna().any())
    tasks: dict[str, Any] = {}
    swept_columns: set[str] = set()
    for task, part in runs.groupby("task", sort=True):
        metric = main_metric(part)
        sparsity, bits = _swept(part, "sparsity"), _swept(part, "w_bits")
        swept_columns |= {c for c in (sparsity, bits) if c}
        tasks[str(task)] = {"metric": metric, "sparsity": sparsity, "bits": bits,
                            "higher": bool(registry.spec_for(metric).higher_is_better) if metric else True}
    metrics = [c for c in (*main_metrics(runs), *HEADLINE_METRICS, "eff.latency_ms_p50", "eff.compression_ratio")
               if c in runs.columns and runs[c].notna().any()]
    identity = [c for c in ("run_id", *CONFIG_KEYS, "seed") if c in runs.columns]
    columns = list(dict.fromkeys([*identity, *params, *swept_columns, *metrics, *drops]))
    rows = [{c: _json_value(record.get(c)) for c in columns} for record in runs.to_dict("records")]
    curves: dict[str, Any] = {}
    for _, part in runs.groupby("task", sort=True):
        latest = part.sort_values("started_at").tail(MAX_RELIABILITY_RUNS) if "started_at" in part else part
        for _, run in latest.iterrows():
            run_dir = run.get("run_dir")
            if run_dir is None or not (Path(run_dir) / "calibration.npz").is_file():
                continue
            curve = reliability(run_dir)
            curve = curve[curve["tokens"] > 0]
            curves[str(run["run_id"])] = {k: [round(float(v), 5) for v in curve[k]] for k in ("confidence", "accuracy", "tokens")}
    colors = method_colors(list(all_methods) + runs["method"].astype(str).tolist())
    return {
        "rows": rows,
        "columns": columns,
        "table_columns": [*identity, *params, *[c for c in metrics if c != "eff.latency_ms_p50"]],
        "filters": [c for c in ("model", "task", "method") if c in columns],
        "tasks": tasks,
        "drops": drops,
        "labels": {c: label(c) for c in {*metrics, *LABELS}} | {"sparsity": label("sparsity"), "w_bits": label("w_bits")},
        "colors": {m: _hex(c) for m, c in colors.items()},
        "reliability": curves,
    }


def render_dashboard(data: dict[str, Any], title: str = "compbench dashboard", source: str = "") -> str:
    """The HTML text: the jinja2 template with plotly.js and the data inlined."""
    import jinja2
    from plotly.offline import get_plotlyjs

    template = resources.files("compbench.reporting").joinpath("templates/dashboard.html.j2").read_text("utf-8")
    env = jinja2.Environment(autoescape=True, undefined=jinja2.StrictUndefined)
    # json.dumps then escape "</" so that no string in the data can close the <script> element.
    payload = json.dumps(data, allow_nan=False, separators=(",", ":")).replace("</", "<\\/")
    return env.from_string(template).render(
        title=title, source=source, n_runs=len(data["rows"]),
        created=dt.datetime.now(dt.timezone.utc).replace(microsecond=0).isoformat(),
        plotlyjs=jinja2.utils.markupsafe.Markup(get_plotlyjs()),
        data=jinja2.utils.markupsafe.Markup(payload),
    )


def write_dashboard(runs: pd.DataFrame, out: str | Path, all_methods: Sequence[str] = (), source: str = "") -> Path:
    """Write the dashboard of ``runs`` (ok runs, ``run_dir`` resolved) to ``out``; return its path."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(render_dashboard(dashboard_data(runs, all_methods), source=source), encoding="utf-8")
    return out
