"""Exact top-k cosine index (the C++ kernel) with input checking.

Every array is checked here, once, with a message that names what was wrong;
the kernel then receives contiguous float32 and releases the GIL for the whole
call. Scores are cosine similarities: vectors and queries are L2-normalised
inside the kernel.
"""

from __future__ import annotations

import numbers
import sys
from typing import Iterable, Literal, Protocol

import numpy as np

from . import _kernel
from .errors import InvalidArgument

Storage = Literal["fp32", "fp16", "int8"]
STORAGES = ("fp32", "fp16", "int8")

assert sys.byteorder == "little", "the allow bitset is packed little-endian"


def simd_paths() -> list[str]:
    """SIMD code paths this CPU can run, worst to best."""
    return list(_kernel.simd_paths())


def best_simd() -> str:
    """The path the kernel uses by default on this CPU (SKULENS_SIMD caps it)."""
    return _kernel.best_simd()


def _as_matrix(x, dim: int, what: str) -> np.ndarray:
    try:
        a = np.asarray(x)
    except Exception as e:  # ragged lists and the like
        raise InvalidArgument(f"{what} must be a numeric array: {e}") from None
    if a.dtype.kind != "f":
        raise InvalidArgument(f"{what} must be floating point (float16/32/64), got dtype {a.dtype}")
    if a.ndim == 1:
        a = a.reshape(1, -1)
    if a.ndim != 2:
        raise InvalidArgument(f"{what} must be 1-D or 2-D, got shape {a.shape}")
    if a.shape[1] != dim:
        raise InvalidArgument(f"{what} have dimension {a.shape[1]}, the index has {dim}")
    with np.errstate(over="ignore"):  # float64 beyond float32 becomes Inf, caught below
        a = np.ascontiguousarray(a, dtype=np.float32)  # copies only when it must
    finite = np.isfinite(a).all(axis=1)
    if not finite.all():
        raise InvalidArgument(f"{what} row {int(np.argmin(finite))} contains NaN or Inf")
    return a


def _as_ids(ids, what: str = "ids") -> np.ndarray:
    a = np.asarray(ids)
    if a.ndim == 0:
        a = a.reshape(1)
    if a.size == 0:
        return np.empty(0, dtype=np.int64)
    if a.dtype.kind not in "iu" or a.ndim != 1:
        raise InvalidArgument(f"{what} must be a 1-D array of integers, got {a.dtype} shape {a.shape}")
    return np.ascontiguousarray(a, dtype=np.int64)


def upsert_args(ids, vectors, dim: int) -> tuple[np.ndarray, np.ndarray]:
    """Checked (ids, vectors) of an Index.upsert: same length, ids >= 0."""
    x = _as_matrix(vectors, dim, "vectors")
    i = _as_ids(ids)
    if len(i) != len(x):
        raise InvalidArgument(f"{len(i)} ids but {len(x)} vectors")
    if len(i) and i.min() < 0:
        raise InvalidArgument("ids must be >= 0")
    return i, x


def _check_k(k) -> int:
    if isinstance(k, bool) or not isinstance(k, numbers.Integral):
        raise InvalidArgument(f"k must be an integer, got {type(k).__name__}")
    if k <= 0:
        raise InvalidArgument(f"k must be >= 1, got {k}")
    return int(k)


class Bits:
    """A filter already packed as a little-endian bitset (bit i = id i), as the
    catalogue's postings keep it: passed through without unpacking."""

    __slots__ = ("packed", "_count", "_unpacked")

    def __init__(self, packed: np.ndarray):
        self.packed = packed  # uint8; never modified once wrapped (results are memoised)
        self._count = None
        self._unpacked = None

    def count(self) -> int:
        if self._count is None:
            self._count = int(np.bitwise_count(self.packed).sum(dtype=np.int64))
        return self._count

    def unpacked(self) -> np.ndarray:
        if self._unpacked is None:
            self._unpacked = np.unpackbits(self.packed, bitorder="little").view(np.bool_)
        return self._unpacked


def allow_bitset(allow) -> np.ndarray | None:
    """A filter as the kernel's bitset: a boolean mask over ids, or a list of ids."""
    if allow is None:
        return None
    if isinstance(allow, Bits):
        packed = allow.packed
        packed = np.concatenate([packed, np.zeros(-len(packed) % 8, dtype=np.uint8)])
        return packed.view(np.uint64)
    a = np.asarray(allow)
    if a.dtype == np.bool_:
        if a.ndim != 1:
            raise InvalidArgument(f"allow mask must be 1-D, got shape {a.shape}")
        mask = a
    else:
        ids = _as_ids(a, "allow")
        if ids.size and ids.min() < 0:
            raise InvalidArgument("allow ids must be >= 0")
        mask = np.zeros(int(ids.max()) + 1 if ids.size else 0, dtype=bool)
        mask[ids] = True
    packed = np.packbits(mask, bitorder="little")
    packed = np.concatenate([packed, np.zeros(-len(packed) % 8, dtype=np.uint8)])
    return packed.view(np.uint64)


class Index(Protocol):
    """What the catalogue needs from an index (faiss's add/search/remove_ids).

    Ids are the catalogue's slots: small non-negative integers that a delete
    frees and a later insert reuses, so memory does not grow under churn.
    """

    dim: int

    def upsert(self, ids: np.ndarray, vectors: np.ndarray) -> None: ...

    def remove(self, ids: Iterable[int]) -> int: ...

    def search(self, queries, k: int, allow=None) -> tuple[np.ndarray, np.ndarray]: ...

    def __len__(self) -> int: ...


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
        x = _as_matrix(vectors, self.dim, "vectors")
        first = self._call(self._ix.add, x)
        return np.arange(first, first + len(x), dtype=np.int64)

    def set(self, ids, vectors) -> None:
        """Overwrite existing rows (live or removed) in place."""
        x = _as_matrix(vectors, self.dim, "vectors")
        i = _as_ids(ids)
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
        return self._call(self._ix.remove, _as_ids(ids))

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
        q = _as_matrix(queries, self.dim, "queries")
        return self._call(self._ix.search, q, _check_k(k), allow_bitset(allow))

    def rerank(self, query, ids) -> np.ndarray:
        """Exact scores of one query against live ids, in the order given."""
        q = _as_matrix(query, self.dim, "query")
        if len(q) != 1:
            raise InvalidArgument(f"rerank takes one query, got {len(q)}")
        return self._call(self._ix.rerank, q[0], _as_ids(ids))

    def reconstruct(self, ids) -> np.ndarray:
        """Stored (unit, dequantised) vectors of live ids."""
        return self._call(self._ix.reconstruct, _as_ids(ids))

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
