"""The durable product catalogue (`Catalog`): SQLite as the truth, the exact
kernel and an HNSW graph as in-memory caches. See catalog.py for its parts."""

from ..errors import SkulensError
from .catalog import Catalog
from .product import Hit, Product
from .search import EXACT_BELOW, EXACT_FILTERED_BELOW

__all__ = ["Catalog", "Product", "Hit", "SkulensError", "EXACT_BELOW", "EXACT_FILTERED_BELOW"]
