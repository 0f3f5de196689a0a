"""The metric registry: every column registered once, in one module, with a direction; and the
metric columns a real (tiny) run produces are exactly the registered ones. (Row validation and
column order are in ``tests/records/test_schema.py``.)"""

from __future__ import annotations

import ast
import math
import re
from pathlib import Path

import pytest
from run_harness import CONF_DIR, FAMILY_RUNS, compose_run

from compbench.configs import build_dataclass
from compbench.metrics import registry
from compbench.metrics.registry import GROUPS, TASK_KINDS, register, registered, spec_for
from compbench.training.pipeline import run

SRC = Path(registry.__file__).resolve().parents[1]
METRIC_PREFIXES = tuple(f"{g}." for g in GROUPS)


def registrations_in_source(path: Path) -> list[str]:
    """The column of every ``register(...)`` call in ``path``, loops over literal tuples unrolled."""
    columns: list[str] = []

    def visit(node: ast.AST, env: dict) -> None:
        if isinstance(node, ast.For) and isinstance(node.target, ast.Name):
            for value in ast.literal_eval(node.iter):
                for child in node.body:
                    visit(child, {**env, node.target.id: value})
            return
        if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "register":
            columns.append(eval(compile(ast.Expression(node.args[0]), str(path), "eval"), {}, dict(env)))
        for child in ast.iter_child_nodes(node):
            visit(child, env)

    visit(ast.parse(path.read_text()), {})
    return columns


def test_every_column_is_registered_once_and_only_in_the_registry_module():
    columns = registrations_in_source(Path(registry.__file__))
    twice = sorted({c for c in columns if columns.count(c) > 1})
    assert not twice, f"registered more than once: {twice}"
    assert set(columns) == {spec.column for spec in registered()}  # the source read above is all of it
    # One home: no other module registers columns.
    elsewhere = [str(p.relative_to(SRC)) for p in SRC.rglob("*.py") if p.resolve() != Path(registry.__file__).resolve()
                 and re.search(r"\bregister\(\s*f?[\"'](quality|calib|robust|eff)\.", p.read_text())]
    assert not elsewhere, f"metric columns registered outside metrics/registry.py: {elsewhere}"


@pytest.mark.parametrize("spec", registered(), ids=lambda s: s.column)
def test_every_column_has_a_group_a_direction_task_kinds_and_a_description(spec):
    assert spec.group in GROUPS and spec.column.startswith(spec.group + ".")
    assert spec.higher_is_better in (True, False, None)  # None: "better" is undefined (a label, a setting)
    assert spec.task_kinds and set(spec.task_kinds) <= set(TASK_KINDS)
    assert spec.description.strip() and "\n" not in spec.description


def test_register_refuses_a_conflicting_registration_and_bad_prefixes(monkeypatch):
    monkeypatch.setattr(registry, "_REGISTRY", dict(registry._REGISTRY))  # leave the real registry alone
    spec = spec_for("quality.f1")
    assert register(spec.column, spec.higher_is_better, spec.task_kinds, spec.description) == spec  # idempotent
    with pytest.raises(ValueError, match="already registered differently"):
        register("quality.f1", not spec.higher_is_better, spec.task_kinds, spec.description)
    with pytest.raises(ValueError, match="must start with one of"):
        register("accuracy", True)
    with pytest.raises(ValueError, match="unknown task kinds"):
        register("quality.new_metric", True, ("translation",))


#: Registered columns a default run does not write, and the setting that makes a run write them.
CONDITIONAL = {
    "eff.compile_time_s": "evaluation.compile=true",
    "eff.teacher_train_time_s": "finetune.enabled=true",
    "eff.train_step_ms": "a method with a training phase",
}


@pytest.fixture(scope="module", params=sorted(FAMILY_RUNS))
def tiny_run(request, tmp_path_factory):
    """(task kind, row) of one tiny run per family, every metric group on, with an OOD set."""
    family = request.param
    cfg = compose_run(tmp_path_factory.mktemp(family), family, "+evaluation.ood.again={max_eval_samples: 4}")
    row, error = run(cfg, CONF_DIR)
    assert error is None and row["status"] == "ok", row["error"]
    return build_dataclass(cfg.task, "task").kind, row


def test_every_metric_column_of_a_run_is_registered_for_its_task_kind(tiny_run):
    kind, row = tiny_run
    metrics = {k: v for k, v in row.items() if k.startswith(METRIC_PREFIXES)}
    assert {k.split(".")[0] for k in metrics} == set(GROUPS)  # the run wrote every group
    for column, value in metrics.items():
        spec = spec_for(column)
        assert spec is not None, f"{column} is in the row but not registered"
        assert kind in spec.task_kinds, f"{column} is registered for {spec.task_kinds}, written by a {kind} run"
        # The spec that answers is unambiguous: no other pattern of the same length matches.
        rivals = [s for s in registered() if s is not spec and len(s.column) == len(spec.column)
                  and re.fullmatch(s.column.replace(".", r"\.").replace("*", ".*"), column)]
        assert not rivals, f"{column} matches {spec.column} and {[s.column for s in rivals]}"
        if isinstance(value, (str, bool)):
            assert spec.higher_is_better is None, f"{column} holds {value!r}: a label has no direction"
        elif spec.higher_is_better is not None:
            assert isinstance(value, (int, float)) and (math.isfinite(value) or column.endswith("drop")), column


def test_every_column_registered_for_the_task_kind_is_written_by_a_run(tiny_run):
    kind, row = tiny_run
    concrete = {s.column for s in registered(task_kind=kind) if "*" not in s.column}
    missing = sorted(concrete - set(row) - set(CONDITIONAL))
    assert not missing, f"registered for {kind} but never written (a dead registration?): {missing}"
