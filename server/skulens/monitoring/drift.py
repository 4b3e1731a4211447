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
        # A search only appends its query here (O(1), no numpy on the request path); `_fold`
        # normalises and adds them in batches of `_batch`, and before every read.
        self._pending: list = []
        self._batch = max(1, min(64, self.window))
        self._ref_vecs: list[np.ndarray] = []
        self._ref_scores: list[float] = []
        self.ref_mean: np.ndarray | None = None
        self.ref_top1: float | None = None
        self._ring: np.ndarray | None = None   # the latest `window` unit queries (rows), oldest at _pos
        self._pos = self._filled = 0
        self._scores = deque(maxlen=self.window)
        self._sum: np.ndarray | None = None

    def observe(self, vector: np.ndarray, top1: float | None) -> None:
        with self._lock:
            self._pending.append((vector, top1))
            if len(self._pending) >= self._batch:
                self._fold()

    def _fold(self) -> None:
        """Pending queries into the reference (the first `window`) or the rolling window."""
        if not self._pending:
            return
        items, self._pending = self._pending, []
        v = np.asarray([x for x, _ in items], np.float64)
        n = np.linalg.norm(v, axis=1)
        ok = (n > 0) & np.isfinite(n)
        v, scores = v[ok] / n[ok, None], [s for (_, s), good in zip(items, ok) if good]
        if self.ref_mean is None:
            take = self.window - sum(len(r) for r in self._ref_vecs)
            self._ref_vecs.append(v[:take])
            self._ref_scores += [s for s in scores[:take] if s is not None]
            v, scores = v[take:], scores[take:]
            if sum(len(r) for r in self._ref_vecs) >= self.window:
                self.ref_mean = np.concatenate(self._ref_vecs).mean(axis=0)
                self.ref_top1 = float(np.mean(self._ref_scores)) if self._ref_scores else None
                self._ref_vecs, self._ref_scores = [], []
            if not len(v):
                return
        if self._ring is None:
            self._ring = np.zeros((self.window, v.shape[1]))
            self._sum = np.zeros(v.shape[1])
        v = v[-self.window:]
        rows = (self._pos + np.arange(len(v))) % self.window
        if self._filled == self.window:
            self._sum -= self._ring[rows].sum(axis=0)
        else:  # rows past the filled part hold nothing yet
            old = rows[rows < self._filled]
            self._sum -= self._ring[old].sum(axis=0)
        self._ring[rows] = v
        self._sum += v.sum(axis=0)
        self._pos = (self._pos + len(v)) % self.window
        self._filled = min(self.window, self._filled + len(v))
        self._scores.extend(s for s in scores if s is not None)

    def values(self) -> dict:
        """The gauges (NaN until there is a reference and a window to compare)."""
        nan = float("nan")
        with self._lock:
            self._fold()
            out = {"reference_ready": float(self.ref_mean is not None), "window_queries": float(self._filled),
                   "mean_cosine": nan, "mean_shift": nan, "top1_mean": nan, "top1_p10": nan, "top1_p50": nan,
                   "reference_top1_mean": nan if self.ref_top1 is None else self.ref_top1}
            if self.ref_mean is not None and self._filled:
                cur = self._sum / self._filled
                denom = np.linalg.norm(cur) * np.linalg.norm(self.ref_mean)
                out["mean_cosine"] = float(cur @ self.ref_mean / denom) if denom else nan
                out["mean_shift"] = float(np.linalg.norm(cur - self.ref_mean))
            if self._scores:
                s = np.fromiter(self._scores, np.float64)
                out.update(top1_mean=float(s.mean()), top1_p10=float(np.quantile(s, 0.1)),
                           top1_p50=float(np.quantile(s, 0.5)))
        return out
