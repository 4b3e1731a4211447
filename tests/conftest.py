"""Shared data for the index tests: clustered unit vectors like real embeddings."""

import numpy as np
import pytest

from skulens.index import simd_paths


def clustered(n: int, dim: int, seed: int = 0, clusters: int = 64, spread: float = 0.7) -> np.ndarray:
    """Points around unit centres shared by every call of the same dim (a
    catalogue's categories); seed picks the points, so queries drawn with
    another seed fall in the same clusters as the data."""
    centres = np.random.default_rng([dim, clusters]).standard_normal((clusters, dim))
    rng = np.random.default_rng(seed)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    x = centres[rng.integers(0, clusters, n)] + spread * rng.standard_normal((n, dim)) / np.sqrt(dim)
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def exact_reference(x: np.ndarray, q: np.ndarray, k: int):
    """float64 numpy top-k by cosine: (scores, ids), ties broken by lower id."""
    xn = x.astype(np.float64)
    xn /= np.linalg.norm(xn, axis=1, keepdims=True)
    qn = q.astype(np.float64)
    qn /= np.linalg.norm(qn, axis=1, keepdims=True)
    s = qn @ xn.T
    ids = np.argsort(-s, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(s, ids, axis=1), ids, s


def recall(found: np.ndarray, truth: np.ndarray) -> float:
    k = truth.shape[1]
    return float(np.mean([len(set(f[f >= 0]) & set(t)) / k for f, t in zip(found, truth)]))


SIMD = simd_paths()


@pytest.fixture(params=SIMD)
def simd(request):
    """Every SIMD path this CPU can run (scalar, avx2, avx512 here)."""
    return request.param
