"""Shared fixtures for the index tests."""

import os
import sys

import pytest

# Synthetic vectors (bench/synthetic.py) are the benchmarks' and the tests' data; not shipped.
sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "bench"))
sys.path.insert(0, os.path.dirname(__file__))

from skulens.index import simd_paths
from synthetic import clustered, exact_topk as exact_reference, recall  # noqa: F401

SIMD = simd_paths()


@pytest.fixture(params=SIMD)
def simd(request):
    """Every SIMD path this CPU can run (scalar, avx2, avx512 here)."""
    return request.param


@pytest.fixture(scope="session")
def postgres():
    """A PostgreSQL server for the session (tests/postgres.py). Where the package is missing the
    tests that need it skip, except in CI (CI=true), which installs it and must run them."""
    from postgres import Postgres
    try:
        pg = Postgres()
    except FileNotFoundError as e:
        if os.environ.get("CI"):
            raise
        pytest.skip(str(e))
    yield pg
    pg.stop()


@pytest.fixture
def pg_url(postgres):
    """The URL of a fresh, empty database on the session's PostgreSQL."""
    return postgres.database()
