"""Indexes over the catalogue's slots, behind one interface (`base.Index`):
`ExactIndex` (the C++ exact kernel) and `HnswIndex` (hnswlib's graph, our walk),
filtered by one bitset type, `Allow`."""

from ..limits import STORAGES
from .base import Index, ShortResult
from .bits import Allow, as_allow
from .exact import ExactIndex, best_simd, simd_paths
from .hnsw import HnswIndex

__all__ = ["Index", "ExactIndex", "HnswIndex", "Allow", "as_allow", "ShortResult", "STORAGES", "best_simd",
           "simd_paths"]
