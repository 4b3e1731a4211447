"""Embedding drift: are today's queries like the ones the catalogue was tuned for?

The first `window` queries form the reference; after that a rolling window of the latest
`window` queries is compared with it: the cosine between the two windows' mean embeddings
(1 = the same direction; a camera gone bad, a new product line or inverted images pull it down),
the norm of the shift between the means, and the top-1 scores' mean and quantiles against the
reference's (queries that find nothing close score low). Memory is two windows of floats.
"""

from __future__ import annotations

import threading
from collections import deque

import numpy as np


class Drift:
    def __init__(self, window: int = 1000):
        self.window = int(window)
        self._lock = threading.Lock()
        self._ref_vecs: list[np.ndarray] = []
        self._ref_scores: list[float] = []
        self.ref_mean: np.ndarray | None = None
        self.ref_top1: float | None = None
        self._cur = deque(maxlen=self.window)
        self._scores = deque(maxlen=self.window)
        self._sum: np.ndarray | None = None

    def observe(self, vector: np.ndarray, top1: float | None) -> None:
        v = np.asarray(vector, np.float64)
        n = np.linalg.norm(v)
        if not n > 0:
            return
        v = v / n
        with self._lock:
            if self.ref_mean is None:
                self._ref_vecs.append(v)
                if top1 is not None:
                    self._ref_scores.append(top1)
                if len(self._ref_vecs) >= self.window:
                    self.ref_mean = np.mean(self._ref_vecs, axis=0)
                    self.ref_top1 = float(np.mean(self._ref_scores)) if self._ref_scores else None
                    self._ref_vecs, self._ref_scores = [], []
                return
            if self._sum is None:
                self._sum = np.zeros_like(v)
            if len(self._cur) == self._cur.maxlen:
                self._sum -= self._cur[0]
            self._cur.append(v)
            self._sum += v
            if top1 is not None:
                self._scores.append(top1)

    def values(self) -> dict:
        """The gauges (NaN until there is a reference and a window to compare)."""
        nan = float("nan")
        with self._lock:
            out = {"reference_ready": float(self.ref_mean is not None), "window_queries": float(len(self._cur)),
                   "mean_cosine": nan, "mean_shift": nan, "top1_mean": nan, "top1_p10": nan, "top1_p50": nan,
                   "reference_top1_mean": nan if self.ref_top1 is None else self.ref_top1}
            if self.ref_mean is not None and self._cur:
                cur = self._sum / len(self._cur)
                denom = np.linalg.norm(cur) * np.linalg.norm(self.ref_mean)
                out["mean_cosine"] = float(cur @ self.ref_mean / denom) if denom else nan
                out["mean_shift"] = float(np.linalg.norm(cur - self.ref_mean))
            if self._scores:
                s = np.fromiter(self._scores, np.float64)
                out.update(top1_mean=float(s.mean()), top1_p10=float(np.quantile(s, 0.1)),
                           top1_p50=float(np.quantile(s, 0.5)))
        return out
