"""The results row: one flat dict per run, the public contract read by reports and notebooks.

A row has four kinds of columns, in this order:

* identity/provenance (``IDENTITY_COLUMNS``): who ran what, where, from which code;
* config (``CONFIG_COLUMNS``): model, task, lang, method (a chain is written ``a+b``), seed;
* method parameters: ``method.<name>`` (a chain: ``method.<stage>.<name>``);
* metrics: ``quality.*``, ``calib.*``, ``robust.*``, ``eff.*`` (see ``compbench.metrics.registry``).

Values are scalars only (``None``, bool, int, float, str), so a row maps onto one SQL row, one
CSV line and one parquet record without nesting.
"""

from __future__ import annotations

import copy
import datetime as dt
import hashlib
import json
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from compbench.errors import ConfigError, first_line
from compbench.metrics.registry import GROUPS

#: Identity and provenance columns, in display order.
IDENTITY_COLUMNS: tuple[str, ...] = (
    "run_id",
    "config_hash",
    "sweep_id",
    "status",
    "error",
    "started_at",
    "duration_s",
    "git_sha",
    "hardware",
    "torch_version",
    "transformers_version",
    "compbench_version",
    "lock_hash",
    "run_dir",
    "teacher_hash",
    "teacher_reused",
    # sha-derived identity of the data the run read (compbench.tasks.fingerprint); part of config_hash
    "data_fingerprint",
    # the debug config the run was made with (e.g. "fast"), empty for a real run; reports skip such rows
    "debug",
    # the task's main quality column (Task.main_metric, e.g. quality.f1), read by reports and sweepers
    "main_metric",
)

#: Config columns, in display order. ``lang`` is empty where the task has no language.
CONFIG_COLUMNS: tuple[str, ...] = ("model", "task", "lang", "method", "seed")

#: Prefix of the flattened method parameters.
METHOD_PREFIX = "method."

#: Metric column prefixes, in display order (one per registry group).
METRIC_PREFIXES: tuple[str, ...] = tuple(f"{group}." for group in GROUPS)

#: The SQL type of each fixed column, so a failed first run (seed None, no duration) cannot
#: give a column the wrong type. Dynamic columns are typed from their first value.
FIXED_COLUMN_TYPES: dict[str, str] = {
    **{name: "TEXT" for name in IDENTITY_COLUMNS + CONFIG_COLUMNS},
    "duration_s": "REAL",
    "teacher_reused": "BOOLEAN",
    "seed": "INTEGER",
}

#: Allowed values of ``status``.
STATUSES: tuple[str, ...] = ("ok", "failed")

#: Config keys (dotted paths from the root) that do not change a run's results, left out of
#: ``config_hash`` so that two runs differing only in these share a hash (and a cached result):
#: where files go (``paths``, ``hydra``), how progress is shown or logged (``logger``,
#: progress bar, model summary, log interval, ``extras``, ``print_config``), run labels
#: (``sweep_id``, ``tags``, ``task_name``, ``run_id``), console verbosity (``verbose``), the results store location, and how a run
#: is resumed (``force``, ``resume``: checkpointing does not change what is computed).
CONFIG_HASH_IGNORE: tuple[str, ...] = (
    "paths",
    "hydra",
    "logger",
    "sweep_id",
    "run_id",
    "tags",
    "task_name",
    "extras",
    "print_config",
    "verbose",
    "store",
    "force",
    "resume",
    "trainer.enable_progress_bar",
    "trainer.enable_model_summary",
    "trainer.log_every_n_steps",
    "trainer.default_root_dir",
)

_SCALAR_TYPES = (bool, int, float, str)


class RowError(ValueError):
    """A results row breaks the row contract (unknown column, nested value, bad status)."""


def utc_timestamp() -> str:
    """Now as ISO 8601 UTC with seconds (``2024-05-01T10:00:00+00:00``), for ``started_at``."""
    return dt.datetime.now(dt.timezone.utc).replace(microsecond=0).isoformat()


#: Longest ``error`` cell; a traceback belongs in the run directory's log, not in the table.
ERROR_MAX_CHARS = 500


def error_summary(exc: BaseException) -> str:
    """The ``error`` column of a failed run: ``Type: first line of the message``, one line."""
    line = first_line(exc)
    text = f"{type(exc).__name__}: {line}" if line else type(exc).__name__
    return text if len(text) <= ERROR_MAX_CHARS else text[: ERROR_MAX_CHARS - 1] + "…"


# ------------------------------------------------------------------------------ config hash
def _drop_path(cfg: dict, dotted: str) -> None:
    node: Any = cfg
    *parents, leaf = dotted.split(".")
    for key in parents:
        if not isinstance(node, dict) or key not in node:
            return
        node = node[key]
    if isinstance(node, dict):
        node.pop(leaf, None)


def _json_default(value: Any) -> Any:
    if isinstance(value, Path):
        return str(value)
    raise ConfigError(
        f"config_hash cannot hash a {type(value).__name__} value; pass the resolved config "
        "as plain dicts, lists and scalars (OmegaConf.to_container(cfg, resolve=True))."
    )


def config_hash(cfg: Mapping[str, Any], ignore: Iterable[str] = CONFIG_HASH_IGNORE,
                data_fingerprint: str | None = None) -> str:
    """Hash of the resolved config: sha256 of its canonical JSON, first 16 hex digits.

    Args:
        cfg: the resolved config as nested dicts (an OmegaConf ``DictConfig`` is resolved here).
        ignore: dotted key paths left out because they do not change results.
        data_fingerprint: the fingerprint of the data the run reads (``Task.fingerprint``); with
            it, the same config on edited data is a different config.

    Returns:
        16 lowercase hex digits; equal configs (up to key order and ignored keys) hash equal.
    """
    try:
        from omegaconf import DictConfig, OmegaConf

        if isinstance(cfg, DictConfig):
            cfg = OmegaConf.to_container(cfg, resolve=True)
    except ImportError:  # pragma: no cover - omegaconf is a dependency
        pass
    if not isinstance(cfg, Mapping):
        raise ConfigError(f"config_hash needs a mapping, got a {type(cfg).__name__}.")
    pruned = copy.deepcopy(dict(cfg))
    for dotted in ignore:
        _drop_path(pruned, dotted)
    if data_fingerprint:
        pruned["__data_fingerprint__"] = data_fingerprint
    canonical = json.dumps(
        pruned, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=_json_default
    )
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()[:16]


# ------------------------------------------------------------------------------ method params
def _flatten(prefix: str, params: Mapping[str, Any], out: dict[str, Any]) -> None:
    for key, value in params.items():
        column = f"{prefix}{key}"
        if isinstance(value, Mapping):
            _flatten(column + ".", value, out)
        elif isinstance(value, (list, tuple)):
            out[column] = ",".join(map(str, value))
        else:
            out[column] = value


def method_label(stages: list[tuple[str, Mapping[str, Any]]]) -> str:
    """The ``method`` column of a run: stage names joined with ``+`` (``prune+kd``)."""
    return "+".join(name for name, _ in stages)


def flatten_method_params(stages: list[tuple[str, Mapping[str, Any]]]) -> dict[str, Any]:
    """Method parameters as row columns.

    Args:
        stages: ``(stage name, parameters)`` in chain order, e.g. ``[("kd", {"alpha": 0.5})]``.

    Returns:
        ``{"method.alpha": 0.5}`` for one stage; ``{"method.<stage>.<name>": ...}`` for a chain.
        Nested mappings continue the dotted path; lists become comma-joined strings.
    """
    names = [name for name, _ in stages]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ConfigError(
            f"method chain stage names must be unique, but {', '.join(duplicates)} repeats; "
            "give repeated stages distinct names (e.g. prune1, prune2)."
        )
    out: dict[str, Any] = {}
    for name, params in stages:
        prefix = METHOD_PREFIX if len(stages) == 1 else f"{METHOD_PREFIX}{name}."
        _flatten(prefix, params, out)
    return out


# ------------------------------------------------------------------------------ columns
def _column_rank(column: str) -> tuple[int, int, str]:
    if column in IDENTITY_COLUMNS:
        return (0, IDENTITY_COLUMNS.index(column), "")
    if column in CONFIG_COLUMNS:
        return (1, CONFIG_COLUMNS.index(column), "")
    if column.startswith(METHOD_PREFIX):
        return (2, 0, column)
    for i, prefix in enumerate(METRIC_PREFIXES):
        if column.startswith(prefix):
            return (3 + i, 0, column)
    return (3 + len(METRIC_PREFIXES), 0, column)


def order_columns(columns: Iterable[str]) -> list[str]:
    """Identity, config, ``method.*``, then quality/calib/robust/eff (each sorted); others last."""
    return sorted(dict.fromkeys(columns), key=_column_rank)


def is_known_column(column: str) -> bool:
    """Whether ``column`` belongs to the row contract."""
    return (
        column in IDENTITY_COLUMNS
        or column in CONFIG_COLUMNS
        or (column.startswith(METHOD_PREFIX) and len(column) > len(METHOD_PREFIX))
        or any(column.startswith(p) and len(column) > len(p) for p in METRIC_PREFIXES)
    )


def is_scalar(value: Any) -> bool:
    """None, bool, int, float or str (numpy scalars count: the store converts them)."""
    if value is None or isinstance(value, _SCALAR_TYPES):
        return True
    try:
        import numpy as np
    except ImportError:  # pragma: no cover - numpy is a dependency
        return False
    return isinstance(value, np.generic) and np.ndim(value) == 0 and not isinstance(value, np.void)


def validate_row(row: Mapping[str, Any]) -> None:
    """Raise ``RowError`` when ``row`` breaks the row contract.

    Checks: ``run_id`` and ``status`` present; every column known (identity, config or one of
    the ``method.``/metric prefixes); every value a scalar; ``status`` in ``STATUSES``;
    ``error`` one line.
    """
    for required in ("run_id", "status"):
        if not row.get(required):
            raise RowError(f"a results row needs a non-empty {required!r} column.")
    unknown = sorted(c for c in row if not isinstance(c, str) or not is_known_column(c))
    if unknown:
        raise RowError(
            f"unknown row column(s) {', '.join(map(str, unknown))}; columns must be identity or "
            f"config columns or start with one of {', '.join((METHOD_PREFIX,) + METRIC_PREFIXES)}."
        )
    nested = sorted(c for c, v in row.items() if not is_scalar(v))
    if nested:
        raise RowError(
            f"row column(s) {', '.join(nested)} hold non-scalar values; store numbers or strings "
            "(call .item() on tensors, join lists)."
        )
    if row["status"] not in STATUSES:
        raise RowError(f"status must be one of {', '.join(STATUSES)}, got {row['status']!r}.")
    error = row.get("error")
    if error is not None and ("\n" in str(error) or "\r" in str(error)):
        raise RowError("the error column must be one line; keep the first line of the message.")
