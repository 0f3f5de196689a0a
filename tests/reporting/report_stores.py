"""Synthetic results stores of known rows and helpers, shared by the reporting tests."""

from __future__ import annotations

import math
import sqlite3
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from compbench.records.store import ResultsStore

# Two seeds per (model, method). quality.f1 is higher-is-better, eff.size_mb and quality.ppl
# lower-is-better (registry); eff.mode has no direction; quality.custom is not registered.
# Each seed has its own teacher (teacher_hash t<seed>); method=none is the baseline.
RUNS = [
    # model, method, seed, f1, size_mb, ppl
    ("xlmr", "none", 0, 0.80, 500.0, 10.0),
    ("xlmr", "none", 1, 0.82, 500.0, 12.0),
    ("xlmr", "kd", 0, 0.78, 250.0, 11.0),
    ("xlmr", "kd", 1, 0.76, 250.0, 13.0),
    ("xlmr", "prune+quant", 0, 0.70, 60.0, 30.0),
    ("xlmr", "prune+quant", 1, 0.72, 60.0, 32.0),
]


def make_store(path: Path) -> ResultsStore:
    """The store above, plus one failed kd run (seed 2)."""
    store = ResultsStore(path)
    for i, (model, method, seed, f1, size, ppl) in enumerate(RUNS):
        store.append({
            "run_id": f"run{i:02d}-{method}", "status": "ok", "error": "", "model": model, "task": "ner",
            "lang": "", "method": method, "seed": seed, "config_hash": f"h{i}", "teacher_hash": f"t{seed}",
            "started_at": f"2024-01-0{i + 1}T00:00:00+00:00", "teacher_reused": i > 0,
            "quality.f1": f1, "quality.ppl": ppl, "quality.custom": 100.0 - i, "eff.size_mb": size,
            "eff.mode": "dense", "calib.ece": 0.05 + 0.01 * i, **({"method.alpha": 0.5} if method == "kd" else {}),
        })
    store.append({"run_id": "run99-failed", "status": "failed", "error": "RuntimeError: boom",
                  "model": "xlmr", "task": "ner", "method": "kd", "seed": 2, "quality.f1": math.nan})
    return store


def mark_debug(path: Path, debug_run_ids: set[str]) -> None:
    """Mark runs as made with ``debug=fast`` (the row's ``debug`` column; added where an older
    store lacks it)."""
    with sqlite3.connect(path) as conn:
        columns = {row[1] for row in conn.execute("PRAGMA table_info(runs)")}
        if "debug" not in columns:
            conn.execute('ALTER TABLE runs ADD COLUMN "debug" TEXT')
        for run_id in debug_run_ids:
            conn.execute('UPDATE runs SET "debug" = \'fast\' WHERE run_id = ?', (run_id,))


def make_study_store(path: Path, root: Path) -> ResultsStore:
    """A store shaped like a real study: two tasks (NER F1, LM perplexity), a sparsity sweep over
    two seeds with baselines, a bit-width sweep, robustness and latency columns, and run
    directories holding ``calibration.npz``, so that every plot kind has data."""
    store = ResultsStore(path)
    rng = np.random.default_rng(0)
    i = 0

    def add(**row):
        nonlocal i
        run_dir = root / "runs" / f"r{i:02d}"
        run_dir.mkdir(parents=True, exist_ok=True)
        confidence = rng.uniform(0.3, 1.0, 400)
        correct = rng.uniform(0, 1, 400) < confidence - 0.1 * (row.get("method.sparsity") or 0)
        np.savez(run_dir / "calibration.npz", confidence=confidence, correct=correct)
        store.append({"run_id": f"r{i:02d}", "status": "ok", "error": "", "lang": "", "run_dir": str(run_dir),
                      "started_at": f"2024-02-01T00:00:{i:02d}+00:00", "config_hash": f"c{i}", **row})
        i += 1

    for seed in (0, 1):
        base = {"model": "tiny", "task": "ner", "seed": seed, "teacher_hash": f"ner{seed}"}
        add(**base, method="none", **{"quality.f1": 0.80 + 0.01 * seed, "calib.ece": 0.05, "eff.size_mb": 2.0,
                                      "eff.latency_ms_p50": 4.0, "eff.speedup": 1.0, "robust.mean_drop": 0.10,
                                      "robust.char_swap.drop": 0.12, "robust.lowercase.drop": 0.08})
        for sparsity in (0.3, 0.6, 0.9):
            add(**base, method="prune_magnitude", **{
                "method.sparsity": sparsity, "quality.f1": 0.80 - 0.3 * sparsity ** 2 + 0.01 * seed,
                "calib.ece": 0.05 + 0.1 * sparsity, "eff.size_mb": 2.0 * (1 - sparsity / 2),
                "eff.latency_ms_p50": 4.0 - sparsity, "eff.speedup": 4.0 / (4.0 - sparsity),
                "robust.mean_drop": 0.1 + sparsity / 5, "robust.char_swap.drop": 0.12 + sparsity / 5,
                "robust.lowercase.drop": 0.08 + sparsity / 5})
        lm = {"model": "tiny_gpt2", "task": "smoke_lm", "seed": seed, "teacher_hash": f"lm{seed}"}
        add(**lm, method="none", **{"quality.ppl": 20.0 + seed, "eff.size_mb": 4.0, "eff.latency_ms_p50": 3.0})
        for bits in (2, 4, 8):
            add(**lm, method="qat", **{"method.w_bits": bits, "method.e_bits": bits, "method.a_bits": 8,
                                      "method.quantizer": "lsq", "quality.ppl": 20.0 + 16 / bits + seed,
                                      "eff.size_mb": 4.0 * bits / 32, "eff.latency_ms_p50": 3.0})
    return store


# Fixtures, imported by the test modules (no conftest.py here: tests/ modules import the top-level
# conftest by name, and a second conftest module would shadow it).
@pytest.fixture
def store(tmp_path) -> ResultsStore:
    return make_store(tmp_path / "results" / "compbench.db")


@pytest.fixture
def study_store(tmp_path) -> ResultsStore:
    return make_study_store(tmp_path / "study" / "compbench.db", tmp_path / "study")


def report(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    """The real ``compbench-report`` console script (or the module where it is not installed)."""
    script = Path(sys.executable).with_name("compbench-report")
    command = [str(script)] if script.exists() else [sys.executable, "-m", "compbench.reporting.cli"]
    return subprocess.run([*command, *args], capture_output=True, text=True, timeout=300, cwd=cwd)


def cells(markdown: str) -> list[list[str]]:
    """The cells of the first Markdown table in ``markdown`` (header first, rule dropped)."""
    lines = [line for line in markdown.strip().splitlines() if line.startswith("|")]
    return [[c.strip() for c in line.strip("|").split("|")] for line in lines[:1] + lines[2:]]
