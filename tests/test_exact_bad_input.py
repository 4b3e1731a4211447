"""Bad input gets a clear ValueError and never changes what is stored."""

import numpy as np
import pytest

from conftest import clustered
from skulens.errors import InvalidArgument
from skulens.index import ExactIndex


@pytest.fixture
def ix():
    ix = ExactIndex(16, "fp32")
    ix.add(clustered(100, 16))
    return ix


def snapshot(ix):
    q = clustered(5, 16, seed=42)
    return len(ix), ix.search(q, 10)


def assert_unchanged(ix, before):
    n, (s, i) = before
    assert len(ix) == n
    s2, i2 = ix.search(clustered(5, 16, seed=42), 10)
    np.testing.assert_array_equal(i, i2)
    np.testing.assert_array_equal(s, s2)


BAD_VECTORS = [
    (np.ones((3, 15), np.float32), "dimension 15"),
    (np.ones((2, 3, 16), np.float32), "1-D or 2-D"),
    (np.ones((3, 16), np.int64), "floating point"),
    (np.ones((3, 16), np.complex64), "floating point"),
    (np.array([["a"] * 16]), "floating point"),
    (np.zeros((2, 16), np.float32), "all zeros"),
    (np.full((2, 16), np.nan, np.float32), "NaN or Inf"),
    (np.full((2, 16), np.inf, np.float32), "NaN or Inf"),
    (np.full((2, 16), 1e300), "NaN or Inf"),  # overflows float32
    ([[1, 2], [3]], "numeric array"),
]


@pytest.mark.parametrize("bad,msg", BAD_VECTORS)
def test_bad_vectors_on_add(ix, bad, msg):
    before = snapshot(ix)
    with pytest.raises(InvalidArgument, match=msg):
        ix.add(bad)
    assert_unchanged(ix, before)


def test_one_bad_row_rejects_the_whole_batch(ix):
    before = snapshot(ix)
    x = clustered(10, 16, seed=3)
    x[7, 4] = np.nan
    with pytest.raises(ValueError, match="row 7"):
        ix.add(x)
    assert_unchanged(ix, before)


@pytest.mark.parametrize("bad,msg", BAD_VECTORS)
def test_bad_queries(ix, bad, msg):
    with pytest.raises(InvalidArgument, match=msg):
        ix.search(bad, 5)


@pytest.mark.parametrize("k", [0, -1, 2.5, "3", None, True])
def test_bad_k(ix, k):
    with pytest.raises(InvalidArgument, match="k must"):
        ix.search(clustered(1, 16), k)


def test_bad_ids(ix):
    before = snapshot(ix)
    with pytest.raises(InvalidArgument, match="out of range"):
        ix.remove([5, 100])
    with pytest.raises(InvalidArgument, match="out of range"):
        ix.remove([-1])
    with pytest.raises(InvalidArgument, match="integers"):
        ix.remove([1.5])
    with pytest.raises(InvalidArgument, match="out of range"):
        ix.set([1000], clustered(1, 16))
    with pytest.raises(InvalidArgument, match="2 ids but 1 vectors"):
        ix.set([1, 2], clustered(1, 16))
    with pytest.raises(InvalidArgument, match="out of range"):
        ix.rerank(clustered(1, 16)[0], [3, 100])
    with pytest.raises(InvalidArgument, match="one query"):
        ix.rerank(clustered(2, 16), [3])
    with pytest.raises(InvalidArgument, match="allow ids"):
        ix.search(clustered(1, 16), 3, allow=[-4])
    with pytest.raises(InvalidArgument, match="allow mask must be 1-D"):
        ix.search(clustered(1, 16), 3, allow=np.ones((2, 2), bool))
    assert_unchanged(ix, before)  # remove([5, 100]) removed nothing


def test_bad_constructor_arguments():
    for kwargs, msg in [
        (dict(dim=0), "dim"),
        (dict(dim=-3), "dim"),
        (dict(dim=8, storage="bf16"), "storage"),
        (dict(dim=8, threads=0), "threads"),
        (dict(dim=8, simd="sse9"), "SIMD path 'sse9'"),
    ]:
        with pytest.raises(InvalidArgument, match=msg):
            ExactIndex(**kwargs)


def test_non_contiguous_and_other_float_dtypes_are_accepted(ix):
    base = clustered(6, 32, seed=8)
    strided = base[:, ::2]  # non-contiguous view, dim 16
    fortran = np.asfortranarray(clustered(6, 16, seed=9))
    for q in (strided, fortran, strided.astype(np.float64), strided.astype(np.float16)):
        assert not q.flags.c_contiguous or q.dtype != np.float32
        s, i = ix.search(q, 3)
        s2, i2 = ix.search(np.ascontiguousarray(q, dtype=np.float32), 3)
        np.testing.assert_array_equal(i, i2)
        np.testing.assert_array_equal(s, s2)


def test_empty_batches(ix):
    s, i = ix.search(np.empty((0, 16), np.float32), 5)
    assert s.shape == (0, 5)
    assert len(ix.add(np.empty((0, 16), np.float32))) == 0
    assert ix.remove([]) == 0
