"""The index layer's one interface (faiss's add/search/remove_ids) and the argument
checks every implementation shares.

Ids are the catalogue's slots: small non-negative integers that a delete frees
and a later insert reuses, so memory does not grow under churn. Every array is
checked here, once, with a message that names what was wrong; the kernels then
receive contiguous float32 and release the GIL for the whole call.
"""

from __future__ import annotations

import numbers
from typing import Iterable, Protocol

import numpy as np

from ..errors import InvalidArgument
from .bits import Allow


class ShortResult(Exception):
    """A trusted search found fewer hits than asked (a filter cut a graph apart)."""


class Index(Protocol):
    """What the catalogue needs from an index (faiss's add/search/remove_ids).

    Ids are the catalogue's slots: small non-negative integers that a delete
    frees and a later insert reuses, so memory does not grow under churn.
    """

    dim: int

    def upsert(self, ids: np.ndarray, vectors: np.ndarray) -> None: ...

    def remove(self, ids: Iterable[int]) -> int: ...

    def search(self, queries, k: int, allow=None) -> tuple[np.ndarray, np.ndarray]:
        """(scores[B, k'], ids[B, k']) best first; rows short of k' hits padded with -inf / -1."""

    def search_unit(self, q: np.ndarray, k: int, allow: Allow | None, n: int, *,
                    ef: int = 0, rerank=None) -> tuple[np.ndarray, np.ndarray]:
        """The catalogue's trusted path: q one unit float32 [dim] vector, k checked, n the
        number of ids `allow` lets through (live ones without it). Returns 1-D (scores,
        ids) of the hits found, best first; raises ShortResult when fewer than min(k, n)."""

    def __len__(self) -> int: ...



def as_matrix(x, dim: int, what: str) -> np.ndarray:
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


def as_ids(ids, what: str = "ids") -> np.ndarray:
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
    x = as_matrix(vectors, dim, "vectors")
    i = as_ids(ids)
    if len(i) != len(x):
        raise InvalidArgument(f"{len(i)} ids but {len(x)} vectors")
    if len(i) and i.min() < 0:
        raise InvalidArgument("ids must be >= 0")
    return i, x


def check_k(k) -> int:
    if isinstance(k, bool) or not isinstance(k, numbers.Integral):
        raise InvalidArgument(f"k must be an integer, got {type(k).__name__}")
    if k <= 0:
        raise InvalidArgument(f"k must be >= 1, got {k}")
    return int(k)


