"""The query cache: identical image bytes reuse their embedding (content hash)."""

from __future__ import annotations

import threading
from collections import OrderedDict

import numpy as np


class QueryCache:
    """Bounded LRU of content hash -> embedding, with its hit rate."""

    def __init__(self, size: int = 10_000):
        self.size = size
        self._d: OrderedDict[bytes, np.ndarray] = OrderedDict()
        self._lock = threading.Lock()
        self.hits = self.misses = 0

    def get(self, key: bytes):
        with self._lock:
            v = self._d.get(key)
            if v is None:
                self.misses += 1
                return None
            self._d.move_to_end(key)
            self.hits += 1
            return v

    def put(self, key: bytes, v: np.ndarray) -> None:
        if self.size <= 0:
            return
        with self._lock:
            self._d[key] = v
            self._d.move_to_end(key)
            while len(self._d) > self.size:
                self._d.popitem(last=False)

    def stats(self) -> dict:
        n = self.hits + self.misses
        return {"size": len(self._d), "capacity": self.size, "hits": self.hits, "misses": self.misses,
                "hit_rate": self.hits / n if n else 0.0}
