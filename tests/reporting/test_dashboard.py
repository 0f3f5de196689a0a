"""The dashboard in a real browser: headless Chromium opens the self-contained file with no
console message and no network request, draws every plot, and a screenshot is not blank.

Chromium is Debian's ``chromium`` package (``apt-get install -y chromium``), found on PATH as
``chromium``/``chromium-browser``/``google-chrome`` or through ``$CHROMIUM``; the test skips, saying
so, only where none is installed. Console messages are read from Chromium's log
(``--enable-logging=stderr``: every ``console.*`` call and uncaught error is a ``CONSOLE`` line);
network requests from its NetLog (``--log-net-log``): a request the page starts has an initiator,
the browser's own background requests have none. A control page with one console error and one
remote image checks that both detectors see what they look for.
"""

import json
import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from report_stores import report, study_store  # noqa: F401 (fixtures)

from compbench.reporting.dashboard import dashboard_data, render_dashboard
from compbench.reporting.runs import load_runs

FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
         "--disable-component-update", "--disable-sync"]


def chromium() -> str:
    for candidate in (os.environ.get("CHROMIUM"), "chromium", "chromium-browser", "google-chrome"):
        if candidate and shutil.which(candidate):
            return shutil.which(candidate)
    pytest.skip("Chromium not found: install Debian's package (apt-get install -y chromium) or set CHROMIUM=/path")


def open_in_chromium(page: Path, work: Path, *extra: str) -> tuple[list[str], list[str], subprocess.CompletedProcess]:
    """Load ``page``; return (console lines, URLs the page requested, the process)."""
    profile, netlog = work / "profile", work / "netlog.json"
    proc = subprocess.run(
        [chromium(), *FLAGS, f"--user-data-dir={profile}", "--enable-logging=stderr", "--v=0",
         f"--log-net-log={netlog}", "--virtual-time-budget=10000", *extra, page.resolve().as_uri()],
        capture_output=True, text=True, timeout=180,
    )
    console = [line for line in proc.stderr.splitlines() if ":CONSOLE" in line]
    log = json.loads(netlog.read_text())
    start = log["constants"]["logEventTypes"]["URL_REQUEST_START_JOB"]
    requested = [e["params"]["url"] for e in log["events"] if e["type"] == start and "url" in e.get("params", {})
                 and e["params"].get("initiator") != "not an origin"  # the browser's own background requests
                 and not e["params"]["url"].startswith(("file:", "data:", "blob:"))]
    return console, requested, proc


def test_detectors_see_console_errors_and_requests(tmp_path):
    page = tmp_path / "control.html"
    page.write_text('<html><body><img src="http://example.invalid/x.png">'
                    '<script>console.error("control error")</script></body></html>')
    console, requested, _ = open_in_chromium(page, tmp_path, "--dump-dom")
    assert any("control error" in line for line in console)
    assert requested == ["http://example.invalid/x.png"]


def test_dashboard_opens_offline_without_console_messages(study_store, tmp_path):
    out = tmp_path / "dashboard.html"
    done = report("dashboard", "--db", str(study_store.path), "--out", str(out))
    assert done.returncode == 0, done.stderr
    html = out.read_text()
    assert "<script src" not in html and "<link" not in html  # everything inline

    console, requested, proc = open_in_chromium(out, tmp_path / "dom", "--dump-dom")
    assert console == [] and requested == []
    # ner: size, latency, sparsity, robustness, reliability; smoke_lm: size, latency, bits, reliability
    assert "<title>compbench dashboard: 9 plots, 16 runs</title>" in proc.stdout
    assert proc.stdout.count('class="main-svg"') >= 9  # plotly drew them
    runs_table = proc.stdout.split('<table id="runs">')[1].split("</table>")[0]
    assert runs_table.count("<tr>") == 17  # header + one line per run

    shot = tmp_path / "dashboard.png"
    console, requested, _ = open_in_chromium(out, tmp_path / "shot", f"--screenshot={shot}", "--window-size=1400,2400")
    assert console == [] and requested == []
    import matplotlib.image

    image = matplotlib.image.imread(str(shot))[..., :3]
    assert image.shape[:2] == (2400, 1400)
    assert float((np.abs(image - 1.0).max(axis=-1) > 0.1).mean()) > 0.02  # not blank
    assert len(np.unique((image * 255).astype(np.uint8).reshape(-1, 3), axis=0)) > 50  # plots, not one colour
    print(f"dashboard screenshot: {shot}")


def test_dashboard_data_hover_fields_and_fixed_colours(study_store):
    runs = load_runs(study_store.path)
    data = dashboard_data(runs, all_methods=["kd", "none", "prune_magnitude", "qat"])
    assert {"run_id", "model", "task", "method", "seed", "method.sparsity", "quality.f1", "eff.size_mb"} <= set(data["columns"])
    assert data["tasks"]["smoke_lm"] == {"metric": "quality.ppl", "sparsity": None, "bits": "method.w_bits", "higher": False}
    assert len(data["reliability"]) == 16 and data["drops"] == ["robust.char_swap.drop", "robust.lowercase.drop"]
    assert data["colors"]["qat"] == dashboard_data(runs[runs["method"] == "qat"], ["kd", "none", "prune_magnitude", "qat"])["colors"]["qat"]
    html = render_dashboard(data)
    assert html.count("<script") == 2 and "</script>" not in html.split("const DATA = ")[1].split("\n")[0]
