"""Filters, removes, reuse of slots, compaction, and short results."""

import numpy as np
import pytest

from conftest import clustered, exact_reference
from skulens.index import ExactIndex

STORAGES = ["fp32", "fp16", "int8"]


def filtered_reference(x, q, k, allowed_ids):
    allowed_ids = np.asarray(sorted(allowed_ids))
    s, ids, _ = exact_reference(x[allowed_ids], q, min(k, len(allowed_ids)))
    return s, allowed_ids[ids]


@pytest.mark.parametrize("storage", STORAGES)
@pytest.mark.parametrize("keep", [0.5, 0.1, 0.01, 0.001])
def test_filter_returns_k_whenever_k_rows_pass(simd, storage, keep):
    x = clustered(20000, 64, seed=1)
    q = clustered(8, 64, seed=2)
    ix = ExactIndex(64, storage, simd=simd)
    ix.add(x)
    rng = np.random.default_rng(3)
    mask = rng.random(len(x)) < keep
    allowed = np.flatnonzero(mask)
    k = 10
    scores, ids = ix.search(q, k, allow=mask)
    want = min(k, len(allowed))
    assert np.all((ids[:, :want] >= 0)), "fewer than k hits although k rows pass"
    assert np.all(mask[ids[:, :want]])
    assert np.all(ids[:, want:] == -1) and np.all(np.isneginf(scores[:, want:]))
    if storage == "fp32":
        ref_s, ref_ids = filtered_reference(x, q, k, allowed)
        np.testing.assert_allclose(scores[:, :want], ref_s, atol=1e-5)
        assert (ids[:, :want] == ref_ids).mean() > 0.99
    # The same filter as an id list gives the same answer.
    s2, i2 = ix.search(q, k, allow=allowed)
    np.testing.assert_array_equal(i2, ids)
    np.testing.assert_array_equal(s2, scores)


def test_filter_with_nothing_allowed_and_short_mask():
    x = clustered(300, 16)
    ix = ExactIndex(16)
    ix.add(x)
    s, i = ix.search(x[:2], 5, allow=np.zeros(300, bool))
    assert i.shape == (2, 5) and np.all(i == -1) and np.all(np.isneginf(s))
    # A mask shorter than the index allows only what it covers.
    mask = np.zeros(10, bool)
    mask[[2, 7]] = True
    _, i = ix.search(x[:1], 5, allow=mask)
    assert sorted(i[0, :2]) == [2, 7] and np.all(i[0, 2:] == -1)


@pytest.mark.parametrize("storage", STORAGES)
def test_remove_hides_rows_and_set_reuses_slots(storage):
    x = clustered(2000, 32, seed=4)
    ix = ExactIndex(32, storage)
    ids = ix.add(x)
    gone = ids[::3]
    assert ix.remove(gone) == len(gone)
    assert ix.remove(gone[:5]) == 0  # already removed: no-op
    assert len(ix) == len(x) - len(gone) and ix.ntotal == len(x)
    assert gone[0] not in ix and ids[1] in ix
    _, found = ix.search(x[gone], 5)
    assert not np.isin(found, gone).any()
    # Each removed vector's best live neighbour is not itself.
    # Reuse a freed slot for a new vector: same id, new content, live again.
    new = clustered(1, 32, seed=99)
    ix.set([gone[0]], new)
    assert gone[0] in ix and len(ix) == len(x) - len(gone) + 1
    _, top = ix.search(new, 1)
    assert top[0, 0] == gone[0]
    with pytest.raises(ValueError, match="removed"):
        ix.rerank(new[0], [gone[1]])


@pytest.mark.parametrize("storage", STORAGES)
def test_compact_remaps_and_keeps_answers(storage):
    x = clustered(3000, 24, seed=6)
    q = clustered(10, 24, seed=7)
    ix = ExactIndex(24, storage)
    ix.add(x)
    gone = np.arange(0, 3000, 2)
    ix.remove(gone)
    before_s, before_i = ix.search(q, 10)
    remap = ix.compact()
    assert remap.shape == (3000,) and np.all(remap[gone] == -1)
    kept = np.setdiff1d(np.arange(3000), gone)
    np.testing.assert_array_equal(remap[kept], np.arange(len(kept)))
    assert len(ix) == ix.ntotal == len(kept)
    after_s, after_i = ix.search(q, 10)
    np.testing.assert_array_equal(after_i, remap[before_i])
    np.testing.assert_array_equal(after_s, before_s)
    # The index keeps growing normally after a compaction.
    new_ids = ix.add(x[:5])
    np.testing.assert_array_equal(new_ids, np.arange(len(kept), len(kept) + 5))


def test_k_larger_than_index_and_empty_index():
    ix = ExactIndex(8)
    s, i = ix.search(np.ones((3, 8), np.float32), 10)
    assert s.shape == i.shape == (3, 0)
    x = clustered(4, 8)
    ix.add(x)
    s, i = ix.search(x, 10)
    assert s.shape == (4, 4)
    np.testing.assert_array_equal(np.sort(i, axis=1), np.tile(np.arange(4), (4, 1)))
    ix.remove([0, 1, 2, 3])
    s, i = ix.search(x, 10)
    assert s.shape == (4, 0)


def test_growth_past_many_reallocations_keeps_content():
    ix = ExactIndex(20, "fp16")
    chunks = [clustered(777, 20, seed=s) for s in range(12)]
    for c in chunks:
        ix.add(c)
    allx = np.concatenate(chunks)
    assert len(ix) == len(allx)
    _, i = ix.search(allx[::500], 1)
    np.testing.assert_array_equal(i[:, 0], np.arange(0, len(allx), 500))
