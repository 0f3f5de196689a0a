"""The results store: one SQLite table ``runs``, one row per run, safe for concurrent writers.

Why SQLite: sweeps run as several processes (joblib ``n_jobs=2``, submitit) that each append
their row when they end. An embedded database gives atomic appends without a server; WAL mode
lets readers (reports, dashboards) read while a writer commits.

Columns appear as methods and metrics vary: ``append`` adds missing ones with
``ALTER TABLE ADD COLUMN`` in the same ``BEGIN IMMEDIATE`` transaction as the ``INSERT``, so a
row and its columns land together or not at all. ``run_id`` is UNIQUE, so a row is never stored
twice.

Non-finite floats: ``inf``/``-inf`` are stored as SQLite REAL infinities. SQLite itself turns a
bound NaN into NULL, which would read as "not measured"; so the cell stays NULL (SQL aggregates
skip it, as pandas does) and the names of the row's NaN columns are kept in the store-private
column ``_nan_columns``. ``rows()`` and ``latest_by_config_hash()`` give back ``float('nan')``
for a measured NaN and ``None`` for a metric that was not measured; the parquet export keeps
the two apart (NaN vs null) and the CSV export writes ``nan`` vs an empty field. ``frame()``
follows pandas and shows both as NaN.

Booleans are declared ``BOOLEAN`` (stored 0/1) so that they read back as bools.
"""

from __future__ import annotations

import csv
import math
import random
import sqlite3
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import closing, contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from compbench.records.schema import FIXED_COLUMN_TYPES, order_columns, validate_row

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd
    import pyarrow as pa

# pandas/pyarrow are imported where frames are built: a run process that only appends its row
# (one per sweep worker) does not pay for them.

T = TypeVar("T")

DEFAULT_DB = Path("results/compbench.db")
TABLE = "runs"
#: Store-private column: comma-joined names of the row's columns whose value was NaN.
NAN_COLUMN = "_nan_columns"

#: How long one connection waits on a lock inside SQLite before reporting "locked".
BUSY_TIMEOUT_MS = 10_000
#: Extra retries (with jittered exponential back-off) after SQLite gave up waiting; together
#: with the busy timeout this covers minutes of contention, far more than a sweep produces.
MAX_RETRIES = 12
BACKOFF_S = 0.05
BACKOFF_MAX_S = 2.0


def quote(identifier: str) -> str:
    """Quote an SQL identifier (column names contain dots)."""
    return '"' + identifier.replace('"', '""') + '"'


def sql_type(value: Any) -> str:
    """The declared SQL type of a new column, from its first value."""
    if isinstance(value, bool):
        return "BOOLEAN"
    if isinstance(value, int):
        return "INTEGER"
    if isinstance(value, float):
        return "REAL"
    if isinstance(value, str):
        return "TEXT"
    return ""  # None: no declared type (BLOB affinity keeps later values as given)


def _plain(value: Any) -> Any:
    """numpy scalars -> Python scalars (sqlite3 does not bind numpy types)."""
    return value.item() if hasattr(value, "item") and not isinstance(value, (str, bytes)) else value


def _is_lock_error(exc: sqlite3.OperationalError) -> bool:
    message = str(exc).lower()
    return "locked" in message or "busy" in message


class ResultsStore:
    """The SQLite results database of a project (default ``results/compbench.db``).

    Every call opens its own short-lived connection, so one store object may be used from
    forked or spawned worker processes.

    Args:
        path: database file; its folder is created on first write.
    """

    def __init__(self, path: str | Path = DEFAULT_DB) -> None:
        self.path = Path(path)

    # ------------------------------------------------------------------ connections
    def _connect(self) -> sqlite3.Connection:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # isolation_level=None: we issue BEGIN IMMEDIATE ourselves, so the write lock is taken
        # before reading the table layout (no lock upgrade deadlock between two writers).
        conn = sqlite3.connect(self.path, timeout=BUSY_TIMEOUT_MS / 1000, isolation_level=None)
        conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        return conn

    @contextmanager
    def _reader(self) -> Iterator[sqlite3.Connection]:
        with closing(self._connect()) as conn:
            yield conn

    def _with_retries(self, work: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``work(conn)`` in one BEGIN IMMEDIATE transaction, retrying lock errors."""
        for attempt in range(MAX_RETRIES + 1):
            try:
                with closing(self._connect()) as conn:
                    self._ensure_table(conn)
                    conn.execute("BEGIN IMMEDIATE")
                    try:
                        result = work(conn)
                        conn.execute("COMMIT")
                        return result
                    except BaseException:
                        if conn.in_transaction:
                            conn.execute("ROLLBACK")
                        raise
            except sqlite3.OperationalError as exc:
                if not _is_lock_error(exc) or attempt == MAX_RETRIES:
                    raise
                delay = min(BACKOFF_MAX_S, BACKOFF_S * 2**attempt)
                time.sleep(delay * (0.5 + random.random()))
        raise AssertionError("unreachable")  # pragma: no cover

    @staticmethod
    def _ensure_table(conn: sqlite3.Connection) -> None:
        # WAL is a property of the database file; setting it again is a no-op.
        conn.execute("PRAGMA journal_mode = WAL")
        columns = ", ".join(
            f"{quote(name)} {kind}" + (" NOT NULL UNIQUE" if name == "run_id" else "")
            for name, kind in FIXED_COLUMN_TYPES.items()
        )
        conn.execute(f"CREATE TABLE IF NOT EXISTS {TABLE} ({columns}, {quote(NAN_COLUMN)} TEXT)")

    @staticmethod
    def _declared_types(conn: sqlite3.Connection) -> dict[str, str]:
        info = conn.execute(f"PRAGMA table_info({TABLE})").fetchall()
        return {row[1]: row[2].upper() for row in info}

    # ------------------------------------------------------------------ writing
    def check_usable(self) -> None:
        """Refuse, in one sentence, a store that cannot be opened or written (before a run's work).

        Creates the (empty) table when the file is new; waits out a lock like ``append`` does.
        """
        from compbench.errors import ConfigError

        try:
            self._with_retries(lambda conn: None)
        except sqlite3.DatabaseError as exc:
            raise ConfigError(f"paths.db={self.path} is not a usable compbench results store ({exc}); "
                              "move the file away or set paths.db to another file.") from exc
        except OSError as exc:
            raise ConfigError(f"cannot create the results store {self.path} ({exc.strerror}); "
                              "set paths.output_dir (or paths.db) to a writable folder.") from exc

    def append(self, row: Mapping[str, Any]) -> None:
        """Validate ``row`` and store it in one transaction (adding any new columns).

        Raises:
            RowError: the row breaks the row contract.
            ValueError: a row with this ``run_id`` is already stored, or a new column differs
                from an existing one only in case (SQLite names are case-insensitive).
        """
        validate_row(row)
        values = {name: _plain(value) for name, value in row.items()}
        nan_columns = sorted(
            name for name, value in values.items() if isinstance(value, float) and math.isnan(value)
        )
        for name in nan_columns:
            values[name] = None
        values[NAN_COLUMN] = ",".join(nan_columns) or None

        def insert(conn: sqlite3.Connection) -> None:
            existing = self._declared_types(conn)
            lowered = {name.lower(): name for name in existing}
            for name in values:
                if name in existing:
                    continue
                if name.lower() in lowered:
                    raise ValueError(
                        f"column {name!r} differs from stored column {lowered[name.lower()]!r} "
                        "only in case, which SQLite cannot tell apart; use the same spelling."
                    )
                first = _plain(row.get(name))  # a NaN first value still types the column REAL
                conn.execute(f"ALTER TABLE {TABLE} ADD COLUMN {quote(name)} {sql_type(first)}")
                lowered[name.lower()] = name
            names = list(values)
            placeholders = ", ".join("?" for _ in names)
            try:
                conn.execute(
                    f"INSERT INTO {TABLE} ({', '.join(map(quote, names))}) VALUES ({placeholders})",
                    [values[n] for n in names],
                )
            except sqlite3.IntegrityError as exc:
                raise ValueError(
                    f"run_id {row['run_id']!r} is already in {self.path}; every run needs a new run_id."
                ) from exc

        self._with_retries(insert)

    # ------------------------------------------------------------------ reading
    def _read(self) -> tuple[list[str], dict[str, str], list[dict]]:
        """(ordered columns, declared types, decoded rows) of the stored runs."""
        if not self.path.exists():
            return order_columns(FIXED_COLUMN_TYPES), dict(FIXED_COLUMN_TYPES), []
        with self._reader() as conn:
            # One read transaction: the layout and the rows come from the same WAL snapshot,
            # even while another process adds a column.
            conn.execute("BEGIN")
            types = self._declared_types(conn)
            if not types:
                conn.execute("ROLLBACK")
                return order_columns(FIXED_COLUMN_TYPES), dict(FIXED_COLUMN_TYPES), []
            cursor = conn.execute(f"SELECT * FROM {TABLE} ORDER BY rowid")
            names = [d[0] for d in cursor.description]
            raw = cursor.fetchall()
            conn.execute("ROLLBACK")
        types.pop(NAN_COLUMN, None)
        columns = order_columns(types)
        rows = []
        for record in raw:
            stored = dict(zip(names, record))
            nan_names = stored.pop(NAN_COLUMN) or ""
            row = {name: stored[name] for name in columns}
            for name in nan_names.split(","):
                if name:
                    row[name] = math.nan
            for name, kind in types.items():
                if kind == "BOOLEAN" and row.get(name) is not None:
                    row[name] = bool(row[name])
            rows.append(row)
        return columns, types, rows

    def rows(self) -> list[dict[str, Any]]:
        """All runs in insertion order, each a dict over all columns (NaN vs None kept apart)."""
        return self._read()[2]

    def __len__(self) -> int:
        if not self.path.exists():
            return 0
        with self._reader() as conn:
            if not self._declared_types(conn):
                return 0
            return conn.execute(f"SELECT COUNT(*) FROM {TABLE}").fetchone()[0]

    def table(self) -> pa.Table:
        """All runs as an Arrow table: typed from the declared SQL types, NaN distinct from null."""
        import pyarrow as pa

        columns, types, rows = self._read()
        return pa.table({name: _arrow_column([r.get(name) for r in rows], types[name]) for name in columns})

    def frame(self) -> pd.DataFrame:
        """All runs as a DataFrame, columns ordered by ``order_columns``.

        Integer columns with missing values become float, as pandas does; a measured NaN and a
        missing value both show as NaN (use ``rows()`` to tell them apart).
        """
        return self.table().to_pandas()

    def latest_by_config_hash(self, status: str | None = None) -> dict[str, dict[str, Any]]:
        """The most recent run of each config hash (by ``started_at``, then insertion order).

        Args:
            status: only consider runs with this status (``ok``/``failed``); None: all runs.
        """
        rows = [r for r in self.rows() if r.get("config_hash") and (status is None or r["status"] == status)]
        latest: dict[str, dict[str, Any]] = {}
        for row in rows:  # insertion order: a later equal started_at wins
            current = latest.get(row["config_hash"])
            if current is None or (row.get("started_at") or "") >= (current.get("started_at") or ""):
                latest[row["config_hash"]] = row
        return latest

    # ------------------------------------------------------------------ export
    def export(self, csv_path: str | Path, parquet_path: str | Path) -> tuple[Path, Path]:
        """Write all runs to CSV and parquet; return both paths.

        CSV: one header line, floats in shortest round-trip form, ``nan``/``inf`` for non-finite
        measurements, an empty field for a missing value. Parquet: typed columns, NaN vs null.
        """
        csv_path, parquet_path = Path(csv_path), Path(parquet_path)
        columns, _, rows = self._read()
        csv_path.parent.mkdir(parents=True, exist_ok=True)
        with open(csv_path, "w", newline="", encoding="utf-8") as handle:
            writer = csv.writer(handle)
            writer.writerow(columns)
            for row in rows:
                writer.writerow(["" if row.get(c) is None else _csv_cell(row[c]) for c in columns])
        parquet_path.parent.mkdir(parents=True, exist_ok=True)
        import pyarrow.parquet as pq

        pq.write_table(self.table(), parquet_path)
        return csv_path, parquet_path


def _csv_cell(value: Any) -> str:
    return repr(value) if isinstance(value, float) else str(value)


def _arrow_column(values: list[Any], declared: str) -> pa.Array:
    """One column as an Arrow array of its declared type; mixed values fall back to strings."""
    import pyarrow as pa

    arrow_type = {"BOOLEAN": pa.bool_(), "REAL": pa.float64(), "TEXT": pa.string()}.get(declared)
    if declared == "INTEGER":
        # An INTEGER column stores a float that is not a whole number as REAL (type affinity).
        whole = all(v is None or isinstance(v, int) for v in values)
        arrow_type = pa.int64() if whole else pa.float64()
    try:
        return pa.array(values, type=arrow_type, from_pandas=False)
    except (pa.ArrowInvalid, pa.ArrowTypeError):
        # A parameter that is sometimes a number, sometimes a word (group_size 128 / "channel").
        return pa.array([None if v is None else str(v) for v in values], type=pa.string())
