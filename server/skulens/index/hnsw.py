"""HNSW graph index behind the same `Index` interface as the kernel.

The graph is hnswlib's (`HierarchicalNSW`, vendored in kernels/third_party),
bound by our extension as `HnswGraph`: hnswlib inserts, updates and marks
deletions; our own walk searches it, so ef is a per-call argument, the filter
is a bitset tested inside the walk, and a query is one call that releases the
GIL (no per-node Python callback, no shared ef setting).

Ids are the catalogue's slots. The graph's labels are those slots, and a freed
slot's label is re-added in place (hnswlib unmarks it and repairs its links),
so the graph never grows past the largest slot in use.

hnswlib is not safe when writes run during searches (hnswlib issues 29, 562,
590); the caller holds a reader-writer lock (see `catalog/state.py`). `search` is
read-only on the graph, so concurrent searches are fine.
"""

from __future__ import annotations

import numbers
import os

import numpy as np

from ._kernel import HnswGraph
from ..errors import InvalidArgument
from .base import ShortResult, as_ids, as_matrix, check_k, upsert_args
from .bits import Allow, as_allow

# Per-label state. hnswlib needs "absent" apart from "deleted": a deleted label
# is re-added in place, an absent one takes a new element.
ABSENT, LIVE, DELETED = 0, 1, 2

class HnswIndex:
    """Approximate cosine top-k on unit vectors (HNSW, inner product)."""

    def __init__(self, dim: int, M: int = 16, ef_construction: int = 100, ef: int = 64,
                 threads: int | None = None, capacity: int = 1024):
        for name, v in (("dim", dim), ("M", M), ("ef_construction", ef_construction), ("ef", ef)):
            if isinstance(v, bool) or not isinstance(v, numbers.Integral) or v <= 0:
                raise InvalidArgument(f"{name} must be a positive integer, got {v!r}")
        if M < 2:
            raise InvalidArgument(f"M must be >= 2, got {M}")
        self.dim, self.M, self.ef_construction, self.ef = int(dim), int(M), int(ef_construction), int(ef)
        self.threads = int(threads or os.cpu_count() or 1)
        self._g = HnswGraph(self.dim, max(int(capacity), 16), self.M, self.ef_construction)
        self._state = np.zeros(max(int(capacity), 16), dtype=np.int8)

    # --- state ---------------------------------------------------------------
    def __len__(self) -> int:
        return self.live_count()

    def live_count(self) -> int:
        return int(np.count_nonzero(self._state == LIVE))

    @property
    def capacity(self) -> int:
        return self._g.capacity

    def deleted_count(self) -> int:
        return int(np.count_nonzero(self._state == DELETED))

    # --- writes --------------------------------------------------------------
    def upsert(self, ids, vectors) -> None:
        """Insert or replace unit vectors at the given ids (a batch uses all threads)."""
        i, x = upsert_args(ids, vectors, self.dim)
        if len(i) == 0:
            return
        top = int(i.max()) + 1
        if top > len(self._state):
            grown = np.zeros(max(top, 2 * len(self._state)), dtype=np.int8)
            grown[: len(self._state)] = self._state
            self._state = grown
        new_labels = int(np.count_nonzero(self._state[np.unique(i)] == ABSENT))
        need = self._g.count + new_labels
        if need > self.capacity:
            self._g.resize(max(need, 2 * self.capacity))
        self._g.add(x, i.astype(np.uint64), self.threads if len(i) > 1 else 1)
        self._state[i] = LIVE

    def remove(self, ids) -> int:
        """Hide ids from searches; their elements are reused when the id returns."""
        n = 0
        for i in as_ids(ids).tolist():
            if 0 <= i < len(self._state) and self._state[i] == LIVE:
                self._g.mark_deleted(i)
                self._state[i] = DELETED
                n += 1
        return n

    # --- reads ---------------------------------------------------------------
    def live_ids(self) -> np.ndarray:
        """Ids the graph returns now (sorted)."""
        return np.flatnonzero(self._state == LIVE)

    def search(self, queries, k: int, allow=None, ef: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Top-k of each query: (scores[B, k'], ids[B, k']) best first, k' = min(k, live or
        allowed ids); a row the walk could not fill (a filter cut the graph apart) is
        padded with -inf / -1."""
        q = as_matrix(queries, self.dim, "queries")
        k, ef = check_k(k), self.ef if ef is None else check_k(ef)
        a = as_allow(allow)
        if a is None:
            kk = min(k, self.live_count())
        else:
            m = min(a.bits, len(self._state))
            kk = min(k, int(np.count_nonzero(a.unpacked()[:m] & (self._state[:m] == LIVE))))
        scores = np.full((len(q), kk), -np.inf, np.float32)
        ids = np.full((len(q), kk), -1, np.int64)
        for i, row in enumerate(q):
            s, l = self._g.search(row / np.float32(np.linalg.norm(row) or 1.0), kk, ef,
                                  None if a is None else a.arg, None)
            scores[i, : len(s)], ids[i, : len(l)] = s, l
        return scores, ids

    def search_unit(self, q: np.ndarray, k: int, allow: Allow | None, n: int, *, ef: int = 0,
                    rerank=None) -> tuple[np.ndarray, np.ndarray]:
        """search() on the trusted path (see `Index.search_unit`). ef 0: the default;
        rerank: an ExactIndex holding the same rows, to re-score the top k exactly in
        the same call."""
        kk = min(k, n)
        if kk <= 0:
            return np.empty(0, np.float32), np.empty(0, np.int64)
        scores, labels = self._g.search(q, kk, ef or self.ef, None if allow is None else allow.arg,
                                        None if rerank is None else rerank.kernel)
        if len(labels) < kk:
            raise ShortResult(f"the graph walk found {len(labels)} of {kk}")
        return scores, labels

    # --- persistence ---------------------------------------------------------
    def save(self, graph_path: str, state_path: str) -> None:
        self._g.save(graph_path)
        np.save(state_path, self._state)

    @classmethod
    def load(cls, graph_path: str, state_path: str, dim: int, M: int, ef_construction: int,
             ef: int = 64, threads: int | None = None) -> "HnswIndex":
        self = cls.__new__(cls)
        self.dim, self.M, self.ef_construction, self.ef = int(dim), int(M), int(ef_construction), int(ef)
        self.threads = int(threads or os.cpu_count() or 1)
        self._state = np.load(state_path)
        if self._state.dtype != np.int8 or self._state.ndim != 1:
            raise ValueError("bad state array")
        self._g = HnswGraph.load(self.dim, graph_path, max(len(self._state), 16))
        if self._g.M != self.M or self._g.ef_construction != self.ef_construction:
            raise ValueError(f"graph was built with M={self._g.M}, ef_construction={self._g.ef_construction}")
        if (int(np.count_nonzero(self._state != ABSENT)) != self._g.count
                or int(np.count_nonzero(self._state == DELETED)) != self._g.deleted):
            raise ValueError("state array does not match the graph")
        return self
