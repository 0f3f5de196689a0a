"""``SUMMARY.md``: one Markdown page from every benchmark JSON in a folder."""

from __future__ import annotations

import contextlib
import json
from pathlib import Path
from typing import Any

from compbench.reporting.numbers import readable


def _fmt(value: Any) -> str:
    return readable(value, 3)  # 3 significant digits; thousands separators from 1000 up


def write_summary(out_dir: Path) -> Path:
    """``SUMMARY.md`` from every ``*.json`` in ``out_dir`` (so a partial rerun keeps the others)."""
    docs = {}
    for path in sorted(out_dir.glob("*.json")):
        with contextlib.suppress(Exception):
            docs[path.stem] = json.loads(path.read_text())
    lines = ["# compbench performance benchmarks", "",
             "Written by `python -m compbench.bench` (see `src/compbench/bench/` for how each figure is measured). "
             "Every ratio is a ratio of medians of models/steps timed **interleaved in one process**; the JSON files "
             "beside this one hold every raw timing.", ""]
    first = next(iter(docs.values()), None)
    if first:
        m = first["machine"]
        lines += [f"Machine: {m['cpu']}, {m['usable_cores']} of {m['cores']} cores usable, flags "
                  f"{', '.join(m['key_flags'])}; {', '.join(f'{k} {v}' for k, v in m['versions'].items())}.", ""]
    lines += ["| benchmark | figure | value | target | met | date (UTC) | load avg before → after "
              "| 1-min load during (min/median/max) | rounds |",
              "|---|---|---|---|---|---|---|---|---|"]
    for name, doc in docs.items():
        h = doc["result"].get("headline", {})
        during = doc.get("load_1min_during")  # older files lack it: —
        during = f"{during['min']:.1f} / {during['median']:.1f} / {during['max']:.1f}" if during else "—"
        lines.append(f"| [{name}]({name}.json) | {h.get('name', '')} | {_fmt(h.get('value'))} | {h.get('target', '')} | "
                     f"{ {True: 'yes', False: '**no**', None: '—'}[h.get('met')] } | {doc['date'][:16]} | "
                     f"{doc['load_before']} → {doc['load_after']} | {during} | "
                     f"{doc['rounds']}{' (quick)' if doc['quick'] else ''} |")
    for name, doc in docs.items():
        lines += ["", f"## {name}", ""] + _details(name, doc["result"])
    path = out_dir / "SUMMARY.md"
    path.write_text("\n".join(lines) + "\n")
    return path


def _details(name: str, r: dict[str, Any]) -> list[str]:
    lines: list[str] = []
    if name == "speedup":
        for shape, s in r["shapes"].items():
            lines += [f"**{shape}**: speed-up vs fp32 eager in the same interleaved group; size = fp32 bytes / export bytes", "",
                      "| model | threads | b1 | b8 | size ratio | compile s |", "|---|---|---|---|---|---|"]
            for g in s["groups"]:
                for n, row in g["rows"].items():
                    size = s["size_ratio_vs_fp32"].get(n.split("+")[0])
                    b8 = f"{row['speedup_b8']:.2f}x" if "speedup_b8" in row else "—"
                    lines.append(f"| {n} | {g['threads']} | {row['speedup_b1']:.2f}x | {b8} | "
                                 f"{_fmt(size) + 'x' if size else ''} | {_fmt(s['compile_time_s'].get(n, ''))} |")
            lines += ["", "compbench best int8 / library best int8: " + "; ".join(
                f"{k} {v['ratio']:.2f} ({v['compbench_best'][0]} {v['compbench_best'][1]:.2f}x vs "
                f"{v['library_best'][0]} {v['library_best'][1]:.2f}x)"
                for k, v in s["int8_best_vs_library_best"].items()), ""]
    elif name == "int8_parity":
        lines += ["| setting | compbench / torch.ao speed (ratio of medians) | per-round ratio median [Q1, Q3] (min-max) "
                  "| same operators and calls | linear_dynamic ms per forward (compbench / torch.ao) |",
                  "|---|---|---|---|---|"]
        for k, v in r["settings"].items():
            pr = v["per_round_speed_ratio"]
            lin = [v["profile_per_forward"][n].get("quantized::linear_dynamic", {}).get("self_cpu_ms", float("nan"))
                   for n in ("compbench_int8_torch_ao", "torch.ao_quantize_dynamic")]
            lines.append(f"| {k} | {v['speed_ratio']:.3f} | {pr['median']:.3f} [{pr['quartiles'][0]:.3f}, "
                         f"{pr['quartiles'][2]:.3f}] ({pr['min']:.2f}-{pr['max']:.2f}) | "
                         f"{'yes' if v['same_operators_and_calls'] else 'no: ' + str(v['operator_calls_differing'])} | "
                         f"{lin[0]:.0f} / {lin[1]:.0f} |")
    elif name == "size":
        lines += ["| method | fp32 / export | eff.mode |", "|---|---|---|"]
        for k, v in r["compression_ratio_fp32_over_export"].items():
            lines.append(f"| {k} | {v:.2f}x | {r['eff_mode'].get(k, '')} |")
        lines += ["", "(dynamic int8, structured pruning 50% and KD half depth: see the size column of `speedup`.)"]
        for k, v in r.get("errors", {}).items():
            lines.append(f"| {k} | failed: {v} | |")
    elif name == "scaling":
        for axis in ("seq_len", "width"):
            a = r[axis]
            lines += [f"**vs {axis}** ({', '.join(map(str, a['points']))}): time ratio to the first point, and log-log slope", "",
                      "| kind | " + " | ".join(map(str, a["points"])) + " | slope | slope (last two) |",
                      "|---|" + "---|" * len(a["points"]) + "---|---|"]
            for kind in ("train_step", "eval_forward"):
                k = a[kind]
                lines.append(f"| {kind} | " + " | ".join(f"{k['ratio_vs_first'][str(p)]:.2f}" for p in a["points"])
                             + f" | {k['loglog_slope']:.2f} | {k['loglog_slope_last_two']:.2f} |")
            lines.append("")
    elif name == "memory":
        lines += ["| run | peak RSS MB | exit | wall s |", "|---|---|---|---|"]
        for k, v in r["runs"].items():
            lines.append(f"| {k} | {v['peak_rss_mb']:.0f} | {v['exit_code']} | {v['wall_s']:.0f} |")
    elif name == "train_overhead":
        lines += ["| shape | compbench s | plain s | ratio | median of round ratios |", "|---|---|---|---|---|"]
        for k, v in r["shapes"].items():
            med = v["median_s"]
            lines.append(f"| {k} | {med['compbench_lightning']:.4f} | {med['plain_pytorch']:.4f} | {v['ratio']:.3f} | "
                         f"{v['median_of_round_ratios']:.3f} |")
    if name == "train_overhead" and "profile_tiny_lightning_fit" in r:
        prof = r["profile_tiny_lightning_fit"]
        lines += ["", f"Profile (cProfile of a {prof['steps']}-step Lightning fit, tiny shape; ms per step, "
                      "inflated by the profiler): " + ", ".join(f"{k} {v:.1f}" for k, v in
                                                          prof["cumulative_ms_per_step"].items())]
    if name == "teacher_reuse" and "profile_s" in r:
        lines += ["", "Profile of one run (cumulative s): " + "; ".join(
            f"{label}: " + ", ".join(f"{k} {v:.1f}" for k, v in prof.items() if v > 0.05)
            for label, prof in r["profile_s"].items())]
        if "floor_from_profile" in r:
            lines += ["", f"From this profile: expected ratio (u + 5c) / 6u = {r['expected_from_profile']:.2f}; "
                          f"floor if a cached run cost only its evaluation = {r['floor_from_profile']:.2f}.", ""]
    if name in ("train_overhead", "speedup", "int8_parity", "size", "scaling", "memory"):
        pass
    else:
        med = r.get("median_s", {})
        lines += [", ".join(f"{k}: median {v:.3f} s" for k, v in med.items())
                  + (f"; ratio {r['ratio']:.3f} (median of round ratios {r['median_of_round_ratios']:.3f})"
                     if "ratio" in r else "")]
    if r.get("note"):
        lines += ["", r["note"]]
    return lines
