"""``bench/timing.py``: the primitives every benchmark figure is computed with."""

import pytest

from compbench.bench import loglog_slope, ratio
from compbench.bench.timing import interleaved, medians


def test_ratio_and_slope_follow_their_definitions():
    times = {"a": [2.0, 4.0, 6.0], "b": [1.0, 1.0, 4.0]}
    r = ratio(times, "a", "b")
    assert r["ratio"] == pytest.approx(4.0 / 1.0)
    assert r["median_of_round_ratios"] == pytest.approx(2.0)
    assert loglog_slope([1, 2, 4], [3, 12, 48]) == pytest.approx(2.0)


def test_interleaved_calls_each_once_per_round_in_rotating_order_and_drops_warmup():
    calls = []
    times = interleaved({"a": lambda: calls.append("a"), "b": lambda: calls.append("b"),
                         "c": lambda: calls.append("c")}, rounds=3, warmup=1)
    assert calls == ["a", "b", "c", "b", "c", "a", "c", "a", "b", "a", "b", "c"]
    assert {k: len(v) for k, v in times.items()} == {"a": 3, "b": 3, "c": 3}
    assert set(medians(times)) == {"a", "b", "c"} and all(v >= 0 for v in medians(times).values())
