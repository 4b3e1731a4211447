"""Shared fixtures for the index tests."""

import os
import sys

import pytest

# Synthetic vectors (bench/synthetic.py) are the benchmarks' and the tests' data; not shipped.
sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "bench"))

from skulens.index import simd_paths
from synthetic import clustered, exact_topk as exact_reference, recall  # noqa: F401

SIMD = simd_paths()


@pytest.fixture(params=SIMD)
def simd(request):
    """Every SIMD path this CPU can run (scalar, avx2, avx512 here)."""
    return request.param
