"""HNSW graph index (hnswlib) behind the same `Index` interface as the kernel.

Ids are the catalogue's slots. hnswlib's labels are those slots, and a freed
slot's label is re-added in place (hnswlib unmarks it and repairs its links),
so the graph never grows past the largest slot in use. We do not use hnswlib's
`replace_deleted`: it moves a *different* label into a deleted element and
leaves the old label's lookup pointing at it, which breaks when that label is
reused later, as the catalogue's slots are.

hnswlib is not safe when writes run during searches (hnswlib issues 29, 562,
590); the caller holds a reader-writer lock (see `catalog.py`). `search` is
read-only on the graph, so concurrent searches are fine.
"""

from __future__ import annotations

import numbers
import os
import threading

import hnswlib
import numpy as np

from .errors import InvalidArgument
from .index import Bits, _as_ids, _as_matrix, _check_k, upsert_args

ABSENT, LIVE, DELETED = 0, 1, 2


class ShortResult(Exception):
    """hnswlib found fewer neighbours than asked (a filter cut the graph apart)."""


class HnswIndex:
    """Approximate cosine top-k on unit vectors (hnswlib, inner-product space)."""

    def __init__(self, dim: int, M: int = 16, ef_construction: int = 100, ef: int = 64,
                 threads: int | None = None, capacity: int = 1024):
        for name, v in (("dim", dim), ("M", M), ("ef_construction", ef_construction), ("ef", ef)):
            if isinstance(v, bool) or not isinstance(v, numbers.Integral) or v <= 0:
                raise InvalidArgument(f"{name} must be a positive integer, got {v!r}")
        self.dim, self.M, self.ef_construction, self.ef = int(dim), int(M), int(ef_construction), int(ef)
        self.threads = int(threads or os.cpu_count() or 1)
        self._g = hnswlib.Index(space="ip", dim=self.dim)
        self._g.init_index(max_elements=max(int(capacity), 16), M=self.M,
                           ef_construction=self.ef_construction, allow_replace_deleted=False)
        self._init_common()
        self._state = np.zeros(max(int(capacity), 16), dtype=np.int8)

    def _init_common(self) -> None:
        # hnswlib's ef is one global (set_ef) that every search reads. Searches
        # with the same ef share it; one asking for another ef waits until those
        # finish, then switches it (_ef_gate). Asking hnswlib for k' = ef results
        # instead would cost a cache miss per extra result (it reads each
        # candidate's label), ~0.1 us each, measured at 1M.
        self._ef_lock = threading.Lock()
        self._ef_cv = threading.Condition(self._ef_lock)
        self._ef_now = self.ef
        self._ef_users = 0
        self._ef_wait: dict[int, int] = {}  # ef -> searches waiting for it
        self._g.set_ef(self.ef)
        self._g.set_num_threads(self.threads)

    def _ef_enter(self, ef: int) -> None:
        with self._ef_lock:  # the bare lock: cheaper than the Condition's Python-level __enter__
            if self._ef_now == ef and not self._ef_wait:  # the common case: join
                self._ef_users += 1
                return
        with self._ef_cv:
            self._ef_wait[ef] = self._ef_wait.get(ef, 0) + 1
            # Join while the ef matches and nobody waits for another; else wait for
            # the searches in flight to drain (no starvation either way).
            while not (self._ef_users == 0 or
                       (self._ef_now == ef and all(e == ef for e in self._ef_wait))):
                self._ef_cv.wait()
            self._ef_wait[ef] -= 1
            if not self._ef_wait[ef]:
                del self._ef_wait[ef]
            if self._ef_now != ef:
                self._g.set_ef(ef)
                self._ef_now = ef
            self._ef_users += 1

    def _ef_exit(self) -> None:
        with self._ef_lock:
            self._ef_users -= 1
            if self._ef_users == 0 and self._ef_wait:
                self._ef_cv.notify_all()

    # --- state ---------------------------------------------------------------
    def __len__(self) -> int:
        return self.live_count()

    def live_count(self) -> int:
        return int(np.count_nonzero(self._state == LIVE))

    @property
    def capacity(self) -> int:
        return self._g.get_max_elements()

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
        need = self._g.get_current_count() + new_labels
        if need > self.capacity:
            self._g.resize_index(max(need, 2 * self.capacity))
        self._g.add_items(x, i, num_threads=self.threads if len(i) > 1 else 1)
        self._state[i] = LIVE

    def remove(self, ids) -> int:
        """Hide ids from searches; their elements are reused when the id returns."""
        n = 0
        for i in _as_ids(ids).tolist():
            if 0 <= i < len(self._state) and self._state[i] == LIVE:
                self._g.mark_deleted(i)
                self._state[i] = DELETED
                n += 1
        return n

    # --- reads ---------------------------------------------------------------
    def search(self, queries, k: int, allow: Bits | None = None, ef: int | None = None,
               allowed: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Top-k of one query: (scores[k'], ids[k']) best first.

        k' = min(k, live or `allowed` rows). Raises ShortResult when a filter
        leaves hnswlib unable to find k' of them.
        """
        q = _as_matrix(queries, self.dim, "query")
        if len(q) != 1:
            raise InvalidArgument(f"HNSW search takes one query, got {len(q)}")
        q = q[0] / np.float32(np.linalg.norm(q[0]) or 1.0)
        return self.search_unit(q, _check_k(k), self.ef if ef is None else _check_k(ef), allow,
                                self.live_count() if allowed is None else allowed)

    def search_unit(self, q: np.ndarray, k: int, ef: int, allow: Bits | None, n: int):
        """search() for callers that already checked everything: q a unit float32
        [dim] vector, n the number of live (or allowed) ids."""
        kk = min(k, n)
        if kk <= 0:
            return np.empty(0, np.float32), np.empty(0, np.int64)
        filt = None
        if allow is not None:
            # hnswlib calls the filter once per visited node, holding the GIL each
            # time; a C-level callable (memoryview item lookup, no copy) keeps that
            # call as cheap as Python allows. The mask covers every label in use.
            filt = memoryview(allow.unpacked()).__getitem__
        self._ef_enter(ef)
        try:
            labels, dist = self._g.knn_query(q, k=kk, num_threads=1, filter=filt)
        except RuntimeError as e:
            raise ShortResult(str(e)) from None
        finally:
            self._ef_exit()
        return 1.0 - dist[0], labels[0].view(np.int64)  # labels are slots < 2^63

    # --- persistence ---------------------------------------------------------
    def save(self, graph_path: str, state_path: str) -> None:
        self._g.save_index(graph_path)
        np.save(state_path, self._state)

    @classmethod
    def load(cls, graph_path: str, state_path: str, dim: int, M: int, ef_construction: int,
             ef: int = 64, threads: int | None = None) -> "HnswIndex":
        self = cls.__new__(cls)
        self.dim, self.M, self.ef_construction, self.ef = int(dim), int(M), int(ef_construction), int(ef)
        self.threads = int(threads or os.cpu_count() or 1)
        self._state = np.load(state_path)
        self._g = hnswlib.Index(space="ip", dim=self.dim)
        self._g.load_index(graph_path, max_elements=max(len(self._state), 16), allow_replace_deleted=False)
        if self._g.M != self.M or self._g.ef_construction != self.ef_construction:
            raise ValueError(f"graph was built with M={self._g.M}, ef_construction={self._g.ef_construction}")
        if self._state.dtype != np.int8 or self._state.ndim != 1:
            raise ValueError("bad state array")
        if int(np.count_nonzero(self._state != ABSENT)) != self._g.get_current_count():
            raise ValueError("state array does not match the graph")
        self._init_common()
        return self
