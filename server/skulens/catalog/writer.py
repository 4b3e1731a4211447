"""Writes: group commit into SQLite (the ack point), then apply to memory.

A write returns only after both, so the next search sees it. Whoever holds the
writer mutex commits every write queued so far in one transaction (one fsync)
and applies them in order: under concurrent writers N fsyncs become ~1.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field

import numpy as np

from ..errors import Unavailable
from .filters import terms_of
from .product import Product
from .state import Memory
from .store import Store

log = logging.getLogger("skulens.catalog")


@dataclass(slots=True, eq=False)
class Write:
    """One caller's write waiting in the group-commit queue."""
    kind: str                  # "upsert" (items: Products) or "delete" (items: ids)
    items: list
    slots: list = field(default_factory=list)
    present: list = field(default_factory=list)
    done: bool = False
    result: int = 0
    error: BaseException | None = None


class Writer:
    def __init__(self, store: Store, mem: Memory, path: str, check_open, on_applied, on_commit=None):
        self.store, self.mem, self.path = store, mem, path
        self.mutex = threading.Lock()      # writers (transaction + apply), checkpoints
        self._qlock = threading.Lock()     # the queue
        self._queue: list[Write] = []
        self._check_open = check_open      # raises Unavailable when the catalogue cannot take writes
        self._on_applied = on_applied      # (products changed) -> None, after each group
        self._on_commit = on_commit        # (seconds) -> None, the commit's latency (metrics)
        self.failed: BaseException | None = None

    def submit(self, w: Write):
        with self._qlock:
            self._queue.append(w)
        with self.mutex:
            if not w.done:
                with self._qlock:
                    group, self._queue = self._queue, []
                self._commit_group(group)
        if w.error is not None:
            raise w.error
        return w.result

    def _commit_group(self, group: list[Write]) -> None:
        try:
            self._check_open()
        except Unavailable as e:
            for w in group:
                w.error, w.done = e, True
            return
        slots = self.mem.slots
        overlay: dict[str, int | None] = {}  # id -> slot as the group's earlier writes leave it
        ops, fresh = [], []
        for w in group:
            if w.kind == "upsert":
                w.slots = []
                for p in w.items:
                    s = overlay[p.id] if p.id in overlay else slots.slot_of.get(p.id)
                    if s is None:
                        s = self._alloc()
                        fresh.append(s)
                    overlay[p.id] = s
                    w.slots.append(s)
                ops.append(("upsert", list(zip(w.items, w.slots))))
            else:
                w.present = [i for i in w.items
                             if (overlay[i] if i in overlay else slots.slot_of.get(i)) is not None]
                for i in w.present:
                    overlay[i] = None
                if w.present:
                    ops.append(("delete", w.present))
        try:
            t0 = time.perf_counter()
            seq = self.store.write(ops) if ops else self.store.seq
            if ops and self._on_commit is not None:
                self._on_commit(time.perf_counter() - t0)
        except BaseException as e:  # nothing of the group is acknowledged
            for s in fresh:
                slots.unalloc(s)
            for w in group:
                w.error, w.done = e, True
            if not isinstance(e, Exception):
                raise
            return
        n = 0
        try:
            for w in group:
                if w.kind == "upsert":
                    self._apply_upserts(w.items, np.asarray(w.slots, dtype=np.int64), seq)
                    w.result = seq
                    n += len(w.items)
                else:
                    self._apply_deletes(w.present)
                    w.result = len(w.present)
                    n += len(w.present)
                w.done = True
        except BaseException as e:
            # Committed but not in memory: only a restart (replay from SQLite) repairs that.
            log.exception("catalogue %s: a committed write failed to apply; restart to replay it", self.path)
            self.failed = e
            for w in group:
                if not w.done:
                    w.error, w.done = Unavailable(f"catalogue {self.path} must be reopened: {e}"), True
            raise
        self._on_applied(n)

    def _alloc(self) -> int:
        m = self.mem
        if m.slots.needs_growth():
            # Under the write lock: the indexer flips bits in these arrays too.
            m.rw.acquire_write()
            try:
                m.slots.grow()
                m.postings.grow(m.slots.capacity)
            finally:
                m.rw.release_write()
        return m.slots.alloc()

    def _apply_deletes(self, ids: list[str]) -> None:
        m = self.mem
        m.rw.acquire_write()
        try:
            for i in ids:
                s, terms = m.slots.release(i)
                m.exact.remove([s])
                m.graph.remove([s])
                if m.text is not None and s in m.text:
                    m.text.remove([s])
                m.postings.remove(s, terms)
            m.version += 1
        finally:
            m.rw.release_write()

    def _apply_upserts(self, items: list[Product], slots: np.ndarray, seq: int, chunk: int = 1024) -> None:
        """Kernel and filters now; the graph's old version of an updated slot is
        hidden and the indexer adds the new one (exact scans cover it meanwhile)."""
        m = self.mem
        vecs = np.stack([p.vector for p in items])
        for a in range(0, len(items), chunk):
            b = min(a + chunk, len(items))
            m.rw.acquire_write()
            try:
                m.exact.upsert(slots[a:b], vecs[a:b])
                m.graph.remove(slots[a:b])
                if m.text is not None:
                    self._apply_text(items[a:b], slots[a:b])
                for p, s in zip(items[a:b], slots[a:b].tolist()):
                    terms = terms_of(p.category, p.attributes)
                    old = m.slots.assign(s, p.id, terms, seq)
                    if old is not None:
                        m.postings.remove(s, old)
                    m.postings.add(s, terms)
                m.slots.mark_unindexed(slots[a:b])
                m.version += 1
            finally:
                m.rw.release_write()
            with m.backlog:
                m.backlog.notify_all()

    def _apply_text(self, items: list[Product], slots: np.ndarray) -> None:
        text = self.mem.text
        has = [p.text_vector is not None for p in items]
        if any(has):
            text.upsert(slots[has], np.stack([p.text_vector for p, h in zip(items, has) if h]))
        gone = [int(s) for s, h in zip(slots, has) if not h and s in text]
        if gone:
            text.remove(gone)
