"""Shared fixtures for the index tests."""

import pytest

from skulens.index import simd_paths
from skulens.synthetic import clustered, exact_topk as exact_reference, recall  # noqa: F401

SIMD = simd_paths()


@pytest.fixture(params=SIMD)
def simd(request):
    """Every SIMD path this CPU can run (scalar, avx2, avx512 here)."""
    return request.param
