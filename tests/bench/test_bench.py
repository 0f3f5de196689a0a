"""``python -m compbench.bench --quick``: every benchmark writes a JSON of the documented shape.

Checks the schema and that each reported figure is the one its own raw timings give (recomputed
here with statistics.median) -- never a threshold on a timing.
"""

import json
import math
import statistics
import subprocess
import sys

import pytest

from compbench.bench import BENCHMARKS
from conftest import REPO

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("perf")
    proc = subprocess.run([sys.executable, "-m", "compbench.bench", "--quick", "--out", str(out)], cwd=REPO,
                          capture_output=True, text=True, timeout=600, env={"OMP_NUM_THREADS": "1",
                                                                            **__import__("os").environ})
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out, proc.stdout


def _median_ratio(a, b):
    return statistics.median(a) / statistics.median(b)


def test_quick_run_writes_one_json_per_benchmark_and_a_summary(quick_run):
    out, stdout = quick_run
    assert sorted(p.stem for p in out.glob("*.json")) == sorted(BENCHMARKS)
    summary = (out / "SUMMARY.md").read_text()
    for name in BENCHMARKS:
        doc = json.loads((out / f"{name}.json").read_text())
        assert doc["benchmark"] == name and doc["quick"] is True and doc["schema_version"] == 1
        assert doc["command"].startswith("python -m compbench.bench") and doc["date"]
        machine = doc["machine"]
        assert machine["cpu"] and machine["cores"] >= 1 and isinstance(machine["flags"], list)
        assert "torch" in machine["versions"] and machine["torch_threads"] >= 1
        assert len(doc["load_before"]) == 3 and len(doc["load_after"]) == 3
        during = doc["load_1min_during"]
        assert during["min"] <= during["median"] <= during["max"] and len(during["samples"]) >= 2
        head = doc["result"]["headline"]
        assert {"name", "value", "target", "met"} <= set(head)
        assert isinstance(head["value"], float) and math.isfinite(head["value"])
        assert f"[{name}]({name}.json)" in summary
    assert "summary:" in stdout


def test_ratios_are_recomputable_from_the_raw_timings(quick_run):
    out, _ = quick_run
    load = lambda name: json.loads((out / f"{name}.json").read_text())["result"]  # noqa: E731
    for shape in load("train_overhead")["shapes"].values():
        s = shape["seconds"]
        assert len(s["compbench_lightning"]) == len(s["plain_pytorch"]) == shape["rounds"]
        assert shape["ratio"] == pytest.approx(_median_ratio(s["compbench_lightning"], s["plain_pytorch"]))
    for name, num, den in (("eval_overhead", "compbench_evaluate", "bare_inference_mode"),
                           ("contrastive_overhead", "contrastive_qat_2-2-8", "qat_2-2-8"),
                           ("teacher_reuse", "with_cache", "without_cache")):
        r = load(name)
        assert r["ratio"] == pytest.approx(_median_ratio(r["seconds"][num], r["seconds"][den]))
    for setting in load("int8_parity")["settings"].values():
        s = setting["seconds"]
        assert setting["speed_ratio"] == pytest.approx(
            _median_ratio(s["torch.ao_quantize_dynamic"], s["compbench_int8_torch_ao"]))
        # Same kernels: compbench's export runs exactly torch.ao's operators, as often.
        assert setting["same_operators_and_calls"], setting["operator_calls_differing"]
    for shape in load("speedup")["shapes"].values():
        for group in shape["groups"]:
            base = group["rows"]["fp32"]["raw_ms"]
            for row in group["rows"].values():
                assert row["speedup_b1"] == pytest.approx(
                    statistics.median(base["1"]) / statistics.median(row["raw_ms"]["1"]))
        assert shape["size_ratio_vs_fp32"]["compbench_ptq_half_bf16"] == pytest.approx(2.0, rel=0.02)
    size = load("size")
    assert size["compression_ratio_fp32_over_export"]["none"] == 1.0 and not size["errors"]
    scaling = load("scaling")
    for axis in ("seq_len", "width"):
        med = scaling[axis]["train_step"]["median_s"]
        assert len(med) >= 3
        assert scaling[axis]["train_step"]["loglog_slope"] == pytest.approx(
            loglog_slope([float(k) for k in med], list(med.values())))
    for run in load("memory")["runs"].values():
        assert run["exit_code"] == 0 and run["peak_rss_mb"] > 0
