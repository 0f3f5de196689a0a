"""Fixtures of the reporting tests: synthetic stores of known rows (see report_stores.py)."""

import pytest
from report_stores import make_store, make_study_store  # tests/reporting/, on sys.path (pytest's prepend mode)

from compbench.records.store import ResultsStore


@pytest.fixture
def store(tmp_path) -> ResultsStore:
    return make_store(tmp_path / "results" / "compbench.db")


@pytest.fixture
def study_store(tmp_path) -> ResultsStore:
    return make_study_store(tmp_path / "study" / "compbench.db", tmp_path / "study")
