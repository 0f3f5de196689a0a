"""The test suite's own layout: it mirrors ``src/compbench`` and its test modules are independent
(shared code lives in ``conftest.py`` or in helper modules whose names do not start with ``test_``)."""

from __future__ import annotations

import ast
from pathlib import Path

TESTS = Path(__file__).resolve().parent
PACKAGE = TESTS.parent / "src" / "compbench"


def imported_modules(path: Path) -> set[str]:
    """Every module name ``path`` imports (top level and inside functions), relative ones by their last part."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


def test_no_test_module_imports_another():
    offenders = []
    for path in sorted(TESTS.rglob("test_*.py")):
        for name in imported_modules(path):
            if name.split(".")[-1].startswith("test_") or name == "tests" or name.startswith("tests."):
                offenders.append(f"{path.relative_to(TESTS)} imports {name}")
    assert not offenders, ("test modules import each other; move what they share into conftest.py or a "
                           f"helper module: {offenders}")


def test_every_subpackage_of_src_has_a_test_folder_of_its_own():
    packages = sorted(p.parent.relative_to(PACKAGE) for p in PACKAGE.rglob("__init__.py") if p.parent != PACKAGE)
    assert packages
    missing = [str(p) for p in packages if not list((TESTS / p).glob("test_*.py"))]
    assert not missing, f"no tests/<package>/test_*.py for src/compbench/<package>: {missing}"


#: Source modules without a ``tests/<package>/test_<module>.py`` of their own, and where they are
#: tested instead (or why no test module of their own is due). Every entry names existing files.
TESTED_ELSEWHERE = {
    "cli.py": "tests/test_cli_e2e.py and tests/test_cli_state.py: the CLI by subprocess",
    "pretrain_cli.py": "tests/training/test_pretrain.py runs compbench-pretrain",
    "errors.py": "tests/reliability/test_bad_inputs.py and tests/reliability/test_run_faults.py: the one sentence each failure prints",
    "sweeps.py": "tests/sweeps/test_launchers.py and tests/sweeps/test_sweep_files.py",
    "tracking.py": "tests/tracking/test_wandb.py",
    "bench/cli.py": "tests/bench/test_bench.py runs python -m compbench.bench --quick (slow)",
    "bench/contrastive.py": "tests/bench/test_bench.py (the contrastive_overhead benchmark)",
    "bench/fixtures.py": "tests/bench/test_bench.py (every benchmark builds on it)",
    "bench/memory.py": "tests/bench/test_bench.py",
    "bench/overhead.py": "tests/bench/test_bench.py",
    "bench/scaling.py": "tests/bench/test_bench.py",
    "bench/size.py": "tests/bench/test_bench.py",
    "bench/speed.py": "tests/bench/test_bench.py",
    "bench/summary.py": "tests/bench/test_bench.py checks SUMMARY.md",
    "bench/teacher_reuse.py": "tests/bench/test_bench.py",
    "bench/method_zoo.py": "a manual benchmark (docs/benchmarks.md); its lifecycle is compress, tested in tests/methods",
    "methods/base.py": "tests/methods/test_methods_pipeline.py and tests/methods/test_lifecycle.py: the interface through every method",
    "methods/none.py": "tests/models/test_method_none_parity.py",
    "methods/quantization/quantized_modules.py": "tests/methods/quantization/test_quantizers.py and test_packing.py",
    "models/families.py": "a constant tuple, imported by tests/methods/quantization/test_quantizers.py",
    "models/tiny.py": "tests/models/test_loader.py: tiny twins built from config",
    "models/tokenizer.py": "tests/models/test_loader.py and tests/training/test_pretrain.py",
    "reporting/cli.py": "tests/reporting/test_tables.py, test_plots.py, test_papers.py through compbench-report",
    "reporting/render.py": "tests/reporting/test_tables.py: every format",
    "reporting/runs.py": "tests/reporting/test_notebook.py: the notebook reads the store through it",
    "reporting/selection.py": "tests/reporting/test_tables.py: filters, columns, debug runs, deltas",
    "reporting/summary.py": "tests/test_console.py (the run summary) and tests/reporting/test_tables.py (row_main_metric)",
    "reporting/wandb_tables.py": "tests/reporting/test_wandb_report.py",
    "tasks/fingerprint.py": "tests/reliability/test_fingerprint.py",
    "training/evaluation.py": "tests/training/test_pipeline.py and tests/metrics: the four metric groups",
    "training/preemption.py": "tests/reliability/test_run_faults.py: SIGTERM",
    "training/progress.py": "tests/test_console.py: the step-counted bar",
    "training/trainer.py": "tests/training/test_resume.py (phases resume from their checkpoints) and tests/reliability/test_run_faults.py (SIGTERM in a phase)",
}


def test_every_source_module_has_its_test_module_or_a_listed_reason():
    modules = sorted(str(p.relative_to(PACKAGE)) for p in PACKAGE.rglob("*.py")
                     if p.name not in ("__init__.py", "__main__.py"))
    missing = [m for m in modules if not (TESTS / Path(m).parent / f"test_{Path(m).stem}.py").is_file()
               and m not in TESTED_ELSEWHERE]
    assert not missing, f"add tests/<package>/test_<module>.py (or a reason in TESTED_ELSEWHERE) for: {missing}"
    stale = [m for m in TESTED_ELSEWHERE if m not in modules or (TESTS / Path(m).parent / f"test_{Path(m).stem}.py").is_file()]
    assert not stale, f"TESTED_ELSEWHERE lists modules that are gone or have their own test module now: {stale}"
    for module, reason in TESTED_ELSEWHERE.items():
        for named in (w.rstrip(",:;()") for w in reason.split() if w.startswith("tests/")):
            assert (TESTS.parent / named).exists(), f"{module}: {named} does not exist"
