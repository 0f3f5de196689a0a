"""How compbench prints numbers, in one place: tables (``compbench-report``, paper tables), the
run and sweep summaries, and the benchmarks' ``SUMMARY.md`` all format through here.

A missing value is an empty cell inside a table (Markdown, LaTeX, CSV: an empty cell is what
those formats mean by "no value"), and ``—`` in running text and terminal summaries, where an
empty string would vanish.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

#: Significant digits of table cells (enough to tell F1 0.8123 from 0.8127).
DIGITS = 4
#: A missing value in running text (summaries); in table cells it is the empty string.
MISSING = "—"


def format_number(value: Any, digits: int = DIGITS) -> str:
    """A table cell: ``digits`` significant digits without exponent for everyday magnitudes; ints
    as they are; missing (None, NaN) as an empty cell.

    0.812345 -> 0.8123, 35.2139 -> 35.21, 11.0 -> 11.00, 123456.7 -> 123457, 1e-05 -> 1.000e-05.
    """
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return str(value)
    if math.isinf(value):
        return "inf" if value > 0 else "-inf"
    if isinstance(value, int):
        return str(value)
    magnitude = abs(value)
    if magnitude < 1e-3 and value != 0:
        return f"{value:.{digits - 1}e}"
    return f"{value:.{_decimals(value, digits)}f}"


def _decimals(value: float, digits: int) -> int:
    if value == 0 or not math.isfinite(value):
        return digits - 1 if value == 0 else 0
    return max(0, digits - 1 - math.floor(math.log10(abs(value))))


def column_decimals(values: Sequence[float], digits: int = DIGITS) -> int | None:
    """Decimals that give the column's largest magnitude ``digits`` significant digits, shared by
    the whole column so that numbers line up (None: use an exponent, every value is < 1e-3)."""
    finite = [abs(v) for v in values if v is not None and math.isfinite(v)]
    largest = max(finite, default=0.0)
    if largest == 0.0:
        return digits - 1
    if largest < 1e-3:
        return None
    return _decimals(largest, digits)


def fixed(value: float | None, decimals: int | None) -> str:
    """A table cell with a column's shared ``decimals`` (:func:`column_decimals`; None: exponent)."""
    if value is None or math.isnan(value):
        return ""
    if math.isinf(value) or decimals is None:
        return format_number(value)
    return f"{value:.{decimals}f}"


def readable(value: Any, digits: int = 4) -> str:
    """A number in running text: ``digits`` significant digits, thousands separators for counts
    and for magnitudes of ``10**digits`` and more; missing as ``—``."""
    if value is None or value == "":
        return MISSING
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        if not math.isfinite(value):
            return str(value)
        if abs(value) >= 10 ** digits:
            return f"{value:,.0f}"
        return f"{value:.{digits}g}"
    return str(value)


def percent(value: Any) -> str:
    """A signed percentage with one decimal (0.052 -> +5.2%); missing as ``—``."""
    return MISSING if not isinstance(value, (int, float)) else f"{100 * value:+.1f}%"
