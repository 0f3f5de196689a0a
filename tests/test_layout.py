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
