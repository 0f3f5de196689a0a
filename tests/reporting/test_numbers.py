"""``reporting/numbers.py``: one way to print a number in tables, another in running text."""

import math

import pytest

from compbench.reporting.numbers import MISSING, column_decimals, fixed, format_number, percent, readable


@pytest.mark.parametrize(("value", "text"), [
    (None, MISSING), ("", MISSING), (True, "true"), (12345, "12,345"), (0.812345, "0.8123"),
    (1234.5, "1234"), (123456.7, "123,457"), (math.inf, "inf"), ("kd", "kd"),
])
def test_readable_text(value, text):
    assert readable(value) == text


def test_table_cells_share_a_columns_decimals_and_leave_missing_values_empty():
    values = [0.5, 12.345, 0.001]
    decimals = column_decimals(values)
    assert decimals == 2 and [fixed(v, decimals) for v in values] == ["0.50", "12.35", "0.00"]
    assert fixed(None, 2) == "" and format_number(None) == "" and fixed(1e-5, column_decimals([1e-5])) == "1.000e-05"


def test_percent_is_signed_with_one_decimal():
    assert percent(0.052) == "+5.2%" and percent(-0.1) == "-10.0%" and percent(None) == MISSING
