"""Every bad input in the corpus (``bad_inputs.py``) is refused through the real CLI with one
sentence, a non-zero exit status, no traceback, nothing trained and nothing in the store but a
``failed`` row where the run had started.

The whole corpus runs in one batch (``cli_batch.py``: one forked process per input, imports
paid once, ~1 s per input); a handful also run as plain ``python -m compbench.cli``
subprocesses, so the batch runner cannot hide a difference.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from compbench.records.store import ResultsStore
from reliability.bad_inputs import build_corpus

HERE = Path(__file__).parent
REPO = HERE.parents[1]
COMMON = ["debug=fast", "evaluation.robustness.enabled=false"]
#: Representative inputs also run as plain subprocesses (one per kind).
SUBPROCESS_SUBSET = ("group_option_typo", "sparsity_out_of_range", "data_dir_missing")


def full_argv(case: dict, out: Path) -> list[str]:
    argv = list(case["argv"])
    keys = {a.split("=", 1)[0] for a in argv}
    extra = [] if "paths.output_dir" in keys else [f"paths.output_dir={out}"]
    extra += [] if "logger" in keys else ["logger=none"]
    return [*(["-m"] if "-m" in argv else []), *extra, *COMMON, *(a for a in argv if a != "-m")]


def clear_sentence(output: str, expect: str) -> tuple[bool, str]:
    """(ok, why): the last line of stderr is one compbench sentence naming ``expect``; no traceback."""
    lines = [l for l in output.splitlines() if l.strip()]
    if "Traceback (most recent call last)" in output:
        return False, "a traceback was printed"
    if "HYDRA_FULL_ERROR" in output or "To append to your config" in output:
        return False, "Hydra's own error advice was printed"
    if not lines or not lines[-1].startswith("compbench: "):
        return False, f"last line is not a compbench sentence: {lines[-1:]!r}"
    sentence = lines[-1]
    if expect.lower() not in sentence.lower():
        return False, f"sentence does not mention {expect!r}: {sentence!r}"
    if not re.search(r"[.?]\)?$", sentence) or len(sentence) > 600:
        return False, f"not one complete sentence: {sentence!r}"
    return True, sentence


def check_nothing_done(out: Path) -> str | None:
    """Why the results dir shows work beyond a refusal, or None: no teacher, no export, <= 1 failed row."""
    if (out / "cache" / "teachers").exists() and any((out / "cache" / "teachers").glob("*/teacher.json")):
        return "a teacher was fine-tuned"
    if list(out.glob("runs/*/export")):
        return "an export was written"
    db = out / "compbench.db"
    rows = ResultsStore(db).rows() if db.exists() else []
    if len(rows) > 1 or any(r["status"] != "failed" for r in rows):
        return f"the store holds {[r['status'] for r in rows]}"
    return None


@pytest.fixture(scope="module")
def corpus_results(tmp_path_factory):
    root = tmp_path_factory.mktemp("bad_inputs")
    cases = build_corpus(root / "data")
    for case in cases:
        case["out"] = str(root / "results" / case["id"])
        case["argv"] = full_argv(case, Path(case["out"]))
        case["cwd"] = str(root)
        case["env"] = {"OMP_NUM_THREADS": "1", "HYDRA_FULL_ERROR": "0", **case["env"]}
    (root / "cases.json").write_text(json.dumps(cases))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "WANDB_MODE": "disabled", "PYTHONPATH": os.pathsep.join(
        [str(REPO / "src"), os.environ.get("PYTHONPATH", "")])}
    subprocess.run([sys.executable, str(HERE / "cli_batch.py"), str(root / "cases.json"), str(root / "results.json")],
                   check=True, env=env, cwd=root, timeout=900)
    results = {r["id"]: r for r in json.loads((root / "results.json").read_text())}
    return cases, results


def test_corpus_is_large_enough(corpus_results):
    cases, _ = corpus_results
    assert len(cases) >= 40


def test_every_bad_input_is_refused_in_one_sentence(corpus_results):
    cases, results = corpus_results
    failures, report = [], []
    for case in cases:
        result = results[case["id"]]
        output = result["stdout"] + result["stderr"]
        ok, why = clear_sentence(result["stderr"], case["expect"])
        if result["returncode"] == 0:
            ok, why = False, "exit status 0"
        work = check_nothing_done(Path(case["out"]))
        if work:
            ok, why = False, work
        if "Traceback" in output:
            ok, why = False, "a traceback was printed"
        report.append(f"{'ok  ' if ok else 'FAIL'} {case['id']:<36} {result['seconds']:5.1f}s  {why}")
        if not ok:
            failures.append(case["id"])
    print("\n".join(report))
    print(f"bad inputs tried: {len(cases)}; clear one-sentence refusals: {len(cases) - len(failures)}")
    assert not failures, "\n".join(r for r in report if r.startswith("FAIL"))


@pytest.mark.parametrize("case_id", SUBPROCESS_SUBSET)
def test_representative_inputs_as_plain_subprocesses(corpus_results, case_id, tmp_path):
    cases, _ = corpus_results
    case = next(c for c in cases if c["id"] == case_id)
    argv = full_argv({"argv": [a for a in case["argv"] if not a.startswith("paths.output_dir=")]}, tmp_path / "r")
    env = {**os.environ, **case["env"], "WANDB_MODE": "disabled"}
    proc = subprocess.run([sys.executable, "-m", "compbench.cli", *argv], cwd=case["cwd"], env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode != 0
    ok, why = clear_sentence(proc.stderr, case["expect"])
    assert ok, why
    assert check_nothing_done(tmp_path / "r") is None
