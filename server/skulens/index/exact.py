"""Exact top-k cosine index: the C++ kernel behind the `Index` interface.

Scores are cosine similarities: vectors and queries are L2-normalised inside
the kernel.
"""

from __future__ import annotations

import numbers
from typing import Iterable, Literal

import numpy as np

from . import _kernel
from ..errors import InvalidArgument
from ..limits import STORAGES
from .base import as_ids, as_matrix, check_k, upsert_args
from .bits import Allow, as_allow

Storage = Literal["fp32", "fp16", "int8"]


def simd_paths() -> list[str]:
    """SIMD code paths this CPU can run, worst to best."""
    return list(_kernel.simd_paths())


def best_simd() -> str:
    """The path the kernel uses by default on this CPU (SKULENS_SIMD caps it)."""
    return _kernel.best_simd()


class ExactIndex:
    """Exact cosine top-k over fp32, fp16 or int8 rows.

    Ids are row numbers, stable across remove() (a tombstone) and set() (reuse);
    only compact() renumbers, returning the remap. Safe to call from many threads.
    """

    def __init__(self, dim: int, storage: Storage = "fp32", threads: int | None = None,
                 simd: str | None = None):
        if isinstance(dim, bool) or not isinstance(dim, numbers.Integral) or dim <= 0:
            raise InvalidArgument(f"dim must be a positive integer, got {dim!r}")
        if storage not in STORAGES:
            raise InvalidArgument(f"storage must be one of {STORAGES}, got {storage!r}")
        if threads is not None and (not isinstance(threads, numbers.Integral) or threads < 1):
            raise InvalidArgument(f"threads must be a positive integer or None, got {threads!r}")
        try:
            self._ix = _kernel.ExactIndex(int(dim), storage, int(threads or 0), simd)
        except ValueError as e:
            raise InvalidArgument(str(e)) from None

    # --- properties -------------------------------------------------------
    @property
    def dim(self) -> int:
        return self._ix.dim

    @property
    def storage(self) -> str:
        return self._ix.storage

    @property
    def simd(self) -> str:
        return self._ix.simd

    @property
    def threads(self) -> int:
        return self._ix.threads

    @threads.setter
    def threads(self, n: int) -> None:
        if not isinstance(n, numbers.Integral) or n < 1:
            raise InvalidArgument(f"threads must be a positive integer, got {n!r}")
        self._ix.threads = int(n)

    @property
    def ntotal(self) -> int:
        """Size of the id space (live rows plus tombstones)."""
        return self._ix.ntotal

    def __len__(self) -> int:
        return len(self._ix)

    def __contains__(self, id_) -> bool:
        return isinstance(id_, numbers.Integral) and self._ix.contains(int(id_))

    def __repr__(self) -> str:
        return (f"ExactIndex(dim={self.dim}, storage={self.storage!r}, size={len(self)}, "
                f"threads={self.threads}, simd={self.simd!r})")

    # --- writes -----------------------------------------------------------
    def add(self, vectors) -> np.ndarray:
        """Append vectors [n, dim]; returns their ids."""
        x = as_matrix(vectors, self.dim, "vectors")
        first = self._call(self._ix.add, x)
        return np.arange(first, first + len(x), dtype=np.int64)

    def set(self, ids, vectors) -> None:
        """Overwrite existing rows (live or removed) in place."""
        x = as_matrix(vectors, self.dim, "vectors")
        i = as_ids(ids)
        if len(i) != len(x):
            raise InvalidArgument(f"{len(i)} ids but {len(x)} vectors")
        self._call(self._ix.set, i, x)

    def upsert(self, ids, vectors) -> None:
        """Write rows at the given ids: overwrite below ntotal, append beyond it.

        Ids past the end need not be contiguous: the gaps become removed rows,
        so a caller that allocates ids itself (the catalogue's slots) can use
        them directly.
        """
        i, x = upsert_args(ids, vectors, self.dim)
        if len(i) == 0:
            return
        if len(np.unique(i)) != len(i):
            raise InvalidArgument("ids must be unique within one upsert")
        n = self.ntotal
        old = i < n
        if old.any():
            self.set(i[old], x[old])
        if not old.all():
            new_ids, new_x = i[~old], x[~old]
            top = int(new_ids.max()) + 1
            block = np.zeros((top - n, self.dim), dtype=np.float32)
            block[:, 0] = 1.0  # placeholder for gaps; removed below
            block[new_ids - n] = new_x
            self._call(self._ix.add, block)
            gaps = np.setdiff1d(np.arange(n, top), new_ids, assume_unique=True)
            if len(gaps):
                self._call(self._ix.remove, gaps.astype(np.int64))

    def remove(self, ids: Iterable[int]) -> int:
        """Tombstone ids; returns how many were live. Unknown ids raise."""
        return self._call(self._ix.remove, as_ids(ids))

    def compact(self) -> np.ndarray:
        """Drop tombstones; returns remap[old_id] = new id, or -1 if removed."""
        return self._ix.compact()

    # --- reads ------------------------------------------------------------
    def search(self, queries, k: int, allow=None) -> tuple[np.ndarray, np.ndarray]:
        """Top-k by cosine: (scores[B, k'], ids[B, k']), best first.

        k' = min(k, len(self)). allow (a boolean mask over ids, or an id list)
        is applied inside the scan, so k' hits come back whenever k' rows pass;
        rows with fewer allowed hits are padded with score -inf and id -1.
        """
        q = as_matrix(queries, self.dim, "queries")
        a = as_allow(allow)
        return self._call(self._ix.search, q, check_k(k), None if a is None else a.arg)

    def search_unit(self, q: np.ndarray, k: int, allow: Allow | None, n: int, *, ef: int = 0,
                    rerank=None) -> tuple[np.ndarray, np.ndarray]:
        """search() on the trusted path (see `Index.search_unit`); ef and rerank do not apply."""
        scores, ids = self._ix.search(q[None, :], k, None if allow is None else allow.arg)
        good = ids[0] >= 0
        return scores[0][good], ids[0][good]

    @property
    def kernel(self):
        """The C++ index (`_kernel.ExactIndex`), for a graph that re-scores its walk with it."""
        return self._ix

    def rerank(self, query, ids) -> np.ndarray:
        """Exact scores of one query against live ids, in the order given."""
        q = as_matrix(query, self.dim, "query")
        if len(q) != 1:
            raise InvalidArgument(f"rerank takes one query, got {len(q)}")
        return self._call(self._ix.rerank, q[0], as_ids(ids))

    def reconstruct(self, ids) -> np.ndarray:
        """Stored (unit, dequantised) vectors of live ids."""
        return self._call(self._ix.reconstruct, as_ids(ids))

    def save(self, path: str) -> None:
        """Write the stored rows (as encoded) to one file."""
        self._ix.save(str(path))

    def load(self, path: str) -> None:
        """Replace the contents with a file from save(); ValueError when it is
        damaged or of another dim/storage (nothing is kept half-loaded)."""
        try:
            self._ix.load(str(path))
        except RuntimeError as e:
            raise ValueError(str(e)) from None

    def stream_read(self) -> int:
        """Read every stored byte once (the benchmark's memory floor)."""
        return self._ix.stream_read()

    @staticmethod
    def _call(fn, *args):
        try:
            return fn(*args)
        except ValueError as e:
            raise InvalidArgument(str(e)) from None
