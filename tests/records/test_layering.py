"""Layering of the row contract: ``records`` may read the metric registry, ``metrics`` never
imports ``records`` (so the two cannot form an import cycle)."""

import ast
from pathlib import Path

import compbench

PACKAGE = Path(compbench.__file__).resolve().parent


def imported_modules(path: Path) -> set[str]:
    """Every module a file imports, at any depth (lazy imports inside functions included)."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def test_metrics_never_import_records():
    offenders = {str(path.relative_to(PACKAGE)): sorted(m for m in imported_modules(path)
                                                        if m.startswith("compbench.records"))
                 for path in (PACKAGE / "metrics").rglob("*.py")}
    assert {k: v for k, v in offenders.items() if v} == {}


def test_the_layering_check_sees_imports_inside_functions(tmp_path):
    module = tmp_path / "m.py"
    module.write_text("def f():\n    from compbench.records.schema import validate_row\n")
    assert "compbench.records.schema" in imported_modules(module)
