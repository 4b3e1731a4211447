"""The background graph indexer: adds unindexed slots to the HNSW graph.

Upserts land in the exact kernel at once and in the graph here, a batch per
exclusive hold of the memory lock (a few ms), so writes never wait for graph
insertion and searches scan the backlog exactly meanwhile. Vectors come from
the store, checked against the slot's seq under the write lock, so a slot
rewritten or deleted meanwhile is never indexed stale.
"""

from __future__ import annotations

import logging
import threading
import time
from itertools import islice

import numpy as np

from .state import Memory, progress_bar

log = logging.getLogger("skulens.catalog")


class Indexer:
    def __init__(self, store, mem: Memory, path: str, on_indexed, batch: int = 128):
        self.store, self.mem, self.path, self.batch = store, mem, path, batch
        self.mutex = threading.Lock()   # one batch at a time; checkpoints hold it to save the graph
        self.since_snapshot = 0         # products added since the last snapshot (checkpoints reset it)
        self._on_indexed = on_indexed   # () -> None after each batch
        self._stop = False
        self._thread = threading.Thread(target=self._run, name="skulens-indexer", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def _run(self) -> None:
        m = self.mem
        while True:
            with m.backlog:
                while not m.slots.unindexed and not self._stop:
                    m.backlog.wait()
                if self._stop:
                    return
            try:
                with self.mutex:
                    self._one_batch()
            except Exception:  # never lose the thread: products stay searchable exactly
                log.exception("catalogue %s: background indexing failed; retrying", self.path)
                time.sleep(0.5)
            with m.backlog:
                m.backlog.notify_all()
            self._on_indexed()

    def _one_batch(self) -> None:
        m, slots = self.mem, self.mem.slots
        m.rw.acquire_read()
        try:  # a product's images share its row: read each row once
            ids = list(dict.fromkeys(slots.id_of[s] for s in islice(slots.unindexed, self.batch)))
        finally:
            m.rw.release_read()
        got_ids, got_names, got_seqs, vecs = self.store.rows_of([i for i in ids if i is not None])
        m.rw.acquire_write()
        try:
            got_slots = np.fromiter(map(slots.slot_for, got_ids, got_names), np.int64, len(got_ids))
            ok = np.fromiter((s in slots.unindexed for s in got_slots.tolist()), bool, len(got_slots))
            ok &= got_slots >= 0
            ok &= slots.seq[got_slots] == np.asarray(got_seqs, np.int64)
            m.graph.upsert(got_slots[ok], vecs[ok])
            slots.mark_indexed(got_slots[ok])
        finally:
            m.rw.release_write()
        self.since_snapshot += int(ok.sum())
        if not ok.any():
            time.sleep(0.001)  # rows not committed-and-applied yet: let the writer finish

    def wait(self, timeout: float | None, closed, progress: bool) -> bool:
        """Block until the graph holds every product (True) or timeout passes (False)."""
        m, todo = self.mem, self.mem.slots.unindexed
        deadline = None if timeout is None else time.monotonic() + timeout
        bar = progress_bar(len(todo), "indexing", progress and len(todo) > 10_000)
        last = len(todo)
        with m.backlog:
            while todo and not closed():
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    break
                m.backlog.wait(0.2 if left is None else min(left, 0.2))
                bar.update(max(0, last - len(todo)))
                last = len(todo)
        bar.close()
        return not todo

    def throttle(self, limit: int, closed) -> None:
        """Back-pressure: writers wait while the graph is far behind, so the exact
        scan of not-yet-indexed products stays bounded."""
        m = self.mem
        with m.backlog:
            while len(m.slots.unindexed) >= limit and not closed():
                m.backlog.wait(0.5)

    def stop(self, drain_timeout: float, progress: bool = False) -> None:
        if self._thread.is_alive():
            self.wait(drain_timeout, lambda: False, progress)
        with self.mem.backlog:
            self._stop = True
            self.mem.backlog.notify_all()
        self._thread.join()
