"""`Allow`: the one filter type of every index (C++ `skulens::Allow`).

A little-endian bitset over ids (bit i = id i may be returned), held in a
buffer padded to whole 64-bit words so the kernels read it without a copy.
The catalogue's postings build these; a boolean mask or a list of ids is
turned into one by `as_allow`.
"""

from __future__ import annotations

import sys

import numpy as np

from ..errors import InvalidArgument

assert sys.byteorder == "little", "the allow bitset is packed little-endian"


class Allow:
    """Ids allowed through a search, as a packed bitset. Never modified once
    wrapped (its count and unpacked form are memoised)."""

    __slots__ = ("packed", "words", "bits", "arg", "_count", "_unpacked")

    def __init__(self, packed: np.ndarray, bits: int | None = None):
        packed = np.asarray(packed, dtype=np.uint8)
        pad = -len(packed) % 8
        self.packed = packed
        if pad:  # producers that know (the postings) allocate whole words and skip this copy
            packed = np.concatenate([packed, np.zeros(pad, np.uint8)])
        self.words = packed.view(np.uint64)
        self.bits = 8 * len(self.packed) if bits is None else int(bits)
        self.arg = (self.words, self.bits)  # what the kernels take, built once
        self._count = None
        self._unpacked = None

    @classmethod
    def zeros(cls, bits: int) -> "Allow":
        return cls(np.zeros(8 * ((bits + 63) // 64), np.uint8), bits)

    def count(self) -> int:
        if self._count is None:
            self._count = int(np.bitwise_count(self.packed).sum(dtype=np.int64))
        return self._count

    def unpacked(self) -> np.ndarray:
        if self._unpacked is None:
            self._unpacked = np.unpackbits(self.packed, bitorder="little").view(np.bool_)
        return self._unpacked

    def __and__(self, other: "Allow") -> "Allow":
        n = min(len(self.packed), len(other.packed))
        return Allow(self.packed[:n] & other.packed[:n])


def as_allow(allow) -> Allow | None:
    """None, an Allow, a boolean mask over ids, or a list of ids, as an Allow."""
    if allow is None or isinstance(allow, Allow):
        return allow
    a = np.asarray(allow)
    if a.dtype == np.bool_:
        if a.ndim != 1:
            raise InvalidArgument(f"allow mask must be 1-D, got shape {a.shape}")
        mask = a
    else:
        ids = a.reshape(-1)
        if ids.size and (a.dtype.kind not in "iu" or a.ndim > 1):
            raise InvalidArgument(f"allow must be a boolean mask or a 1-D array of ids, got {a.dtype} {a.shape}")
        ids = ids.astype(np.int64)
        if ids.size and ids.min() < 0:
            raise InvalidArgument("allow ids must be >= 0")
        mask = np.zeros(int(ids.max()) + 1 if ids.size else 0, dtype=bool)
        mask[ids] = True
    return Allow(np.packbits(mask, bitorder="little"))
