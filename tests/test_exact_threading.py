"""Thread count never changes an answer; concurrent callers never tear one."""

import threading

import numpy as np
import pytest

from conftest import clustered
from skulens.index import ExactIndex


@pytest.mark.parametrize("storage", ["fp32", "fp16", "int8"])
def test_results_independent_of_thread_count(simd, storage):
    x = clustered(60000, 64, seed=1)  # large enough to split across threads
    q = clustered(9, 64, seed=2)
    mask = np.random.default_rng(0).random(len(x)) < 0.3
    ref = None
    for t in (1, 2, 3, 5, 8):
        ix = ExactIndex(64, storage, threads=t, simd=simd)
        ix.add(x)
        ix.remove(np.arange(0, len(x), 7))
        got = ix.search(q, 25), ix.search(q, 25, allow=mask)
        if ref is None:
            ref = got
        for (s, i), (rs, ri) in zip(got, ref):
            np.testing.assert_array_equal(i, ri)
            np.testing.assert_array_equal(s, rs)


def test_threads_property():
    ix = ExactIndex(8, threads=3)
    assert ix.threads == 3
    ix.threads = 1
    assert ix.threads == 1
    assert ExactIndex(8).threads >= 1


def test_concurrent_searches_from_python_threads():
    x = clustered(40000, 96, seed=3)
    q = clustered(32, 96, seed=4)
    ix = ExactIndex(96, "fp32", threads=2)
    ix.add(x)
    expected = [ix.search(q[i], 10) for i in range(len(q))]
    errors = []

    def worker(seed):
        rng = np.random.default_rng(seed)
        for _ in range(40):
            i = int(rng.integers(len(q)))
            s, ids = ix.search(q[i], 10)
            if not (np.array_equal(ids, expected[i][1]) and np.array_equal(s, expected[i][0])):
                errors.append(i)

    threads = [threading.Thread(target=worker, args=(s,)) for s in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors


def test_searches_during_writes_see_whole_rows():
    """Writers grow (reallocate), remove and overwrite while readers search."""
    dim = 32
    base = clustered(5000, dim, seed=5)
    ix = ExactIndex(dim, "fp32", threads=2)
    ix.add(base)
    stop = threading.Event()
    errors = []

    def writer():
        rng = np.random.default_rng(1)
        while not stop.is_set():
            ids = ix.add(clustered(500, dim, seed=int(rng.integers(1 << 30))))
            ix.remove(ids[::2])
            ix.set(ids[1:3], base[:2])

    def reader():
        while not stop.is_set():
            s, i = ix.search(base[:4], 5)
            # Each base vector is its own best match, with cosine 1 (whole, untorn rows).
            if not (np.all(i[:, 0] == np.arange(4)) or np.all(s[:, 0] > 0.9999)):
                errors.append((s, i))
            if np.any(np.diff(s, axis=1) > 0):
                errors.append("unsorted")

    ts = [threading.Thread(target=writer)] + [threading.Thread(target=reader) for _ in range(3)]
    for t in ts:
        t.start()
    stop.wait(3.0)
    stop.set()
    for t in ts:
        t.join()
    assert not errors
    assert len(ix) > len(base)
