"""Exact search agrees with a float64 reference; fp16 and int8 keep their recall."""

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from conftest import clustered, exact_reference, recall
from skulens.index import ExactIndex


@pytest.mark.parametrize("dim", [128, 100, 7, 257])
def test_fp32_matches_float64_reference(simd, dim):
    x = clustered(3000, dim, seed=dim)
    q = clustered(40, dim, seed=dim + 1)
    ix = ExactIndex(dim, "fp32", simd=simd)
    ix.add(x)
    scores, ids = ix.search(q, 10)
    ref_s, ref_ids, full = exact_reference(x, q, 10)
    # Scores within 1e-5 of float64, in descending order.
    assert np.abs(scores - ref_s).max() < 1e-5
    assert np.all(np.diff(scores, axis=1) <= 0)
    # Same ids except exact ties: every returned id has the reference score of its rank.
    mismatched = ids != ref_ids
    assert np.all(np.abs(np.take_along_axis(full, ids, 1) - ref_s)[mismatched] < 1e-5)
    assert mismatched.mean() < 0.01


@pytest.mark.parametrize("storage,floor", [("fp16", 0.99), ("int8", 0.97)])
@pytest.mark.parametrize("dim", [128, 256, 100])
def test_compressed_recall_on_clustered_data(simd, storage, floor, dim):
    x = clustered(20000, dim, seed=5)
    q = clustered(200, dim, seed=6)
    ix = ExactIndex(dim, storage, simd=simd)
    ix.add(x)
    _, ids = ix.search(q, 10)
    _, truth, full = exact_reference(x, q, 10)
    r = recall(ids, truth)
    assert r >= floor, f"{storage} recall@10 {r:.4f} < {floor}"
    # Scores stay close to the true cosine of the ids returned.
    scores, _ = ix.search(q, 10)
    tol = 2e-3 if storage == "fp16" else 2e-2
    assert np.abs(scores - np.take_along_axis(full, ids, 1)).max() < tol


@pytest.mark.parametrize("storage", ["fp32", "fp16", "int8"])
def test_simd_paths_agree_with_scalar(storage):
    """Every path returns the same neighbours (int8 codes give bit-identical scores)."""
    from skulens.index import simd_paths

    x = clustered(5000, 96, seed=11)
    q = clustered(17, 96, seed=12)
    results = {}
    for path in simd_paths():
        ix = ExactIndex(96, storage, simd=path)
        ix.add(x)
        results[path] = ix.search(q, 20)
    s0, i0 = results["scalar"]
    for path, (s, i) in results.items():
        if storage == "int8":
            np.testing.assert_array_equal(s, s0)
            np.testing.assert_array_equal(i, i0)
        else:
            assert np.abs(s - s0).max() < 1e-5
            assert (i == i0).mean() > 0.99


@pytest.mark.parametrize("storage", ["fp32", "fp16", "int8"])
def test_batch_equals_single_queries_exactly(simd, storage):
    """The fused batch kernel gives bit-identical answers to one query at a time."""
    x = clustered(4000, 64, seed=3)
    q = clustered(64, 64, seed=4)
    ix = ExactIndex(64, storage, simd=simd)
    ix.add(x)
    for b in (1, 2, 3, 4, 5, 8, 31, 64):
        s, i = ix.search(q[:b], 7)
        for row in range(b):
            s1, i1 = ix.search(q[row], 7)
            np.testing.assert_array_equal(s[row], s1[0])
            np.testing.assert_array_equal(i[row], i1[0])


@pytest.mark.parametrize("storage", ["fp32", "fp16", "int8"])
@pytest.mark.parametrize("dim", [768, 1024])
def test_wide_rows_match_the_reference_and_batches(simd, storage, dim):
    """The common wide embedding sizes (their own single-query stream on AVX2) score as a batch
    does, bit for bit, and as float64 does, within the storage's error; 603 rows end in a tail."""
    x = clustered(603, dim, seed=8)
    q = clustered(5, dim, seed=9)
    ix = ExactIndex(dim, storage, simd=simd)
    ix.add(x)
    s, i = ix.search(q, 603)
    for row in range(len(q)):
        s1, i1 = ix.search(q[row], 603)
        np.testing.assert_array_equal(s[row], s1[0])
        np.testing.assert_array_equal(i[row], i1[0])
    _, _, full = exact_reference(x, q, 10)
    tol = {"fp32": 1e-5, "fp16": 2e-3, "int8": 3e-2}[storage]
    assert np.abs(np.take_along_axis(full, i, 1) - s).max() < tol


@pytest.mark.parametrize("storage", ["fp32", "fp16", "int8"])
def test_filtered_batch_equals_single_queries_exactly(simd, storage):
    """Selective filters score gathered rows (another path through the batch kernels): a batch
    still answers each query exactly as it is answered alone, tail rows included."""
    rng = np.random.default_rng(5)
    x = clustered(3001, 200, seed=6)          # 3001: blocks end in partial tiles and panels
    q = clustered(19, 200, seed=7)
    ix = ExactIndex(200, storage, simd=simd)
    ix.add(x)
    for keep in (0.03, 0.2, 0.9):             # sparse (gathered) and dense blocks
        mask = rng.random(len(x)) < keep
        s, i = ix.search(q, 9, allow=mask)
        assert mask[i[i >= 0]].all()
        for row in range(len(q)):
            s1, i1 = ix.search(q[row], 9, allow=mask)
            np.testing.assert_array_equal(s[row], s1[0])
            np.testing.assert_array_equal(i[row], i1[0])


def test_rerank_gives_exact_scores(simd):
    x = clustered(500, 48, seed=8)
    q = clustered(1, 48, seed=9)[0]
    ix = ExactIndex(48, "fp32", simd=simd)
    ix.add(x)
    cand = np.array([499, 3, 250, 0, 3], dtype=np.int64)
    got = ix.rerank(q, cand)
    _, _, full = exact_reference(x, q[None], 1)
    np.testing.assert_allclose(got, full[0, cand], atol=1e-6)
    # Agrees with search's own scores for the same ids.
    s, i = ix.search(q, 5)
    np.testing.assert_array_equal(ix.rerank(q, i[0]), s[0])


def test_vectors_are_normalised_and_reconstructable():
    rng = np.random.default_rng(1)
    x = (rng.standard_normal((50, 33)) * 7).astype(np.float32)
    for storage, tol in (("fp32", 1e-6), ("fp16", 1e-3), ("int8", 1e-2)):
        ix = ExactIndex(33, storage)
        ids = ix.add(x)
        back = ix.reconstruct(ids)
        unit = x / np.linalg.norm(x, axis=1, keepdims=True)
        assert np.abs(back - unit).max() < tol, storage
        # A vector's best match is itself with cosine ~1.
        s, i = ix.search(x, 1)
        np.testing.assert_array_equal(i[:, 0], ids)
        assert np.all(s[:, 0] > 1 - 2 * tol)


@settings(max_examples=60, deadline=None)
@given(
    n=st.integers(1, 300),
    dim=st.integers(1, 70),
    b=st.integers(1, 9),
    k=st.integers(1, 40),
    storage=st.sampled_from(["fp32", "fp16", "int8"]),
    seed=st.integers(0, 2**16),
    scale=st.sampled_from([1e-3, 1.0, 1e4]),
)
def test_any_shape_matches_reference(n, dim, b, k, storage, seed, scale):
    rng = np.random.default_rng(seed)
    x = (rng.standard_normal((n, dim)) * scale).astype(np.float32)
    q = (rng.standard_normal((b, dim)) * scale).astype(np.float32)
    x[np.linalg.norm(x, axis=1) == 0, 0] = 1.0
    q[np.linalg.norm(q, axis=1) == 0, 0] = 1.0
    ix = ExactIndex(dim, storage)
    ix.add(x)
    scores, ids = ix.search(q, k)
    kk = min(k, n)
    assert scores.shape == ids.shape == (b, kk)
    assert scores.dtype == np.float32 and ids.dtype == np.int64
    ref_s, _, full = exact_reference(x, q, kk)
    tol = {"fp32": 1e-5, "fp16": 2e-3, "int8": 3e-2}[storage]
    assert np.all((ids >= 0) & (ids < n))
    assert all(len(set(r)) == kk for r in ids)  # no duplicates
    assert np.abs(np.take_along_axis(full, ids, 1) - ref_s).max() < 2 * tol
    assert np.all(np.diff(scores, axis=1) <= 0)
