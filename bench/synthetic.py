"""Synthetic clustered unit vectors for tests and benchmarks (no real data needed).

Points scatter around unit centres shared by every call with the same dim, so
queries drawn with another seed fall in the same clusters as the catalogue,
like photos of products from the same categories.
"""

from __future__ import annotations

import numpy as np


def clustered(n: int, dim: int, seed: int = 0, clusters: int = 64, spread: float = 0.7) -> np.ndarray:
    """n unit vectors [n, dim] float32; spread 0.7 puts the nearest neighbour near cosine 0.77."""
    centres = np.random.default_rng([dim, clusters]).standard_normal((clusters, dim))
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    rng = np.random.default_rng(seed)
    x = centres[rng.integers(0, clusters, n)] + spread * rng.standard_normal((n, dim)) / np.sqrt(dim)
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def manifold(n: int, dim: int, seed: int = 0, latent: int = 24, clusters: int = 256,
             spread: float = 0.5, noise: float = 0.02) -> np.ndarray:
    """n unit vectors [n, dim] float32 near a `latent`-dimensional subspace.

    Learned embeddings vary along far fewer directions than they have (their
    intrinsic dimension is tens, not hundreds), which is what makes graph
    search work on them; `clustered` is the harder, isotropic case. Points are
    clusters in a shared latent space, mapped into dim by one fixed random
    projection, plus a little isotropic noise.
    """
    g = np.random.default_rng([dim, latent, clusters, 7])
    proj = np.linalg.qr(g.standard_normal((dim, latent)))[0]  # orthonormal columns
    centres = g.standard_normal((clusters, latent))
    rng = np.random.default_rng(seed)
    z = centres[rng.integers(0, clusters, n)] + spread * rng.standard_normal((n, latent))
    x = z @ proj.T
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    x += noise * rng.standard_normal((n, dim)) / np.sqrt(dim)
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def exact_topk(x: np.ndarray, q: np.ndarray, k: int):
    """float64 top-k by cosine: (scores, ids, all scores); ties go to the lower id."""
    xn = x.astype(np.float64)
    xn /= np.linalg.norm(xn, axis=1, keepdims=True)
    qn = q.astype(np.float64)
    qn /= np.linalg.norm(qn, axis=1, keepdims=True)
    s = qn @ xn.T
    ids = np.argsort(-s, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(s, ids, axis=1), ids, s


def recall(found: np.ndarray, truth: np.ndarray) -> float:
    """Mean fraction of the true top-k found (ids -1 never count)."""
    k = truth.shape[1]
    return float(np.mean([len(set(f[f >= 0]) & set(t)) / k for f, t in zip(found, truth)]))
