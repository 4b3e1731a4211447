"""Writes: group commit into the store (the ack point), then apply to memory.

A write returns only after both, so the next search sees it. Whoever holds the
writer mutex commits every write queued so far in one transaction (one fsync)
and applies them in order: under concurrent writers N fsyncs become ~1.

On a store other processes write too, the transaction first applies what they
committed since this memory's `applied` seq (under the store's write lock, so
nothing can slip in between), then its own writes: memory takes every change
in seq order. Products outside this replica's partition are stored, not held.
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
from .store import Changes, Partition

log = logging.getLogger("skulens.catalog")


@dataclass(slots=True, eq=False)
class Write:
    """One caller's write waiting in the group-commit queue."""
    kind: str                  # "upsert" (items: Products) or "delete" (items: ids)
    items: list
    present: list = field(default_factory=list)
    done: bool = False
    result: int = 0
    error: BaseException | None = None


class Writer:
    def __init__(self, store, mem: Memory, path: str, partition: Partition, check_open, on_applied,
                 on_commit=None):
        self.store, self.mem, self.path, self.partition = store, mem, path, partition
        self.mutex = threading.Lock()      # writers (transaction + apply), the follower, checkpoints
        self._qlock = threading.Lock()     # the queue
        self._queue: list[Write] = []
        self._check_open = check_open      # raises Unavailable when the catalogue cannot take writes
        self._on_applied = on_applied      # (products changed) -> None, after each group
        self._on_commit = on_commit        # (seconds) -> None, the commit's latency (metrics)
        self.failed: BaseException | None = None
        self.applied = threading.Condition()  # notified whenever mem.applied moves (min_seq waits)

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
        store, m = self.store, self.mem
        try:
            head = store.begin()        # the store's write lock: other processes' writes wait
            try:
                if head > m.applied:    # another process wrote since: apply that first, in seq order
                    self.guard(lambda: self.apply(store.changes(m.applied, locked=True)))
                asked = [i for w in group if w.kind == "delete" for i in w.items]
                stored = store.present(asked) if asked else set()
                here: dict[str, bool] = {}  # id -> exists, as the group's earlier writes leave it
                ops = []
                for w in group:
                    if w.kind == "upsert":
                        here.update((p.id, True) for p in w.items)
                        ops.append(("upsert", w.items))
                        continue
                    w.present = [i for i in w.items if here.get(i, i in stored)]
                    here.update((i, False) for i in w.present)
                    if w.present:
                        ops.append(("delete", w.present))
                seq = head + 1 if ops else head
                t0 = time.perf_counter()
                if ops:
                    store.write(ops, seq)
                    store.commit(seq)
                    if self._on_commit is not None:
                        self._on_commit(time.perf_counter() - t0)
                else:
                    store.rollback()
            except BaseException:
                store.rollback()
                raise
        except BaseException as e:  # nothing of the group is acknowledged
            for w in group:
                if not w.done:
                    w.error, w.done = e, True
            if not isinstance(e, Exception):
                raise
            return
        n = 0

        def own():
            nonlocal n
            for w in group:
                if w.kind == "upsert":
                    mine = [p for p in w.items if self.partition.holds(p.id)]
                    if mine:
                        self._apply_upserts(mine, np.full(len(mine), seq, np.int64))
                    w.result = seq
                    n += len(w.items)
                else:
                    self._apply_deletes([i for i in w.present if i in m.slots.slot_of])
                    w.result = len(w.present)
                    n += len(w.present)
                w.done = True
        self.guard(own, group)
        self._advance(seq)
        self._on_applied(n)

    def guard(self, fn, group=()) -> None:
        """Run an apply; if it fails, what is committed is not all in memory, and only a
        restart (replay from the store) repairs that: refuse everything until then."""
        try:
            fn()
        except BaseException as e:
            log.exception("catalogue %s: a committed write failed to apply; restart to replay it", self.path)
            self.failed = e
            for w in group:
                if not w.done:
                    w.error, w.done = Unavailable(f"catalogue {self.path} must be reopened: {e}"), True
            raise

    def _advance(self, seq: int) -> None:
        with self.applied:
            if seq > self.mem.applied:
                self.mem.applied = seq
            self.applied.notify_all()

    def apply(self, ch: Changes) -> int:
        """Apply another process's changes (the caller holds the mutex); returns how many."""
        gone = [i for i in ch.deletes if i in self.mem.slots.slot_of]
        if gone:
            self._apply_deletes(gone)
        if ch.upserts:
            self._apply_upserts(ch.upserts, np.asarray(ch.seqs, np.int64))
        self._advance(ch.upto)
        return len(gone) + len(ch.upserts)

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

    def _apply_upserts(self, items: list[Product], seqs: np.ndarray, chunk: int = 1024) -> None:
        """Kernel and filters now; the graph's old version of an updated slot is
        hidden and the indexer adds the new one (exact scans cover it meanwhile)."""
        m = self.mem
        vecs = np.stack([p.vector for p in items])
        for a in range(0, len(items), chunk):
            b = min(a + chunk, len(items))
            slot_of = m.slots.slot_of  # ids are distinct within one call: each new one gets its own slot
            sl = np.fromiter((slot_of[p.id] if p.id in slot_of else self._alloc() for p in items[a:b]),
                             np.int64, b - a)
            m.rw.acquire_write()
            try:
                m.exact.upsert(sl, vecs[a:b])
                m.graph.remove(sl)
                if m.text is not None:
                    self._apply_text(items[a:b], sl)
                for p, s, q in zip(items[a:b], sl.tolist(), seqs[a:b].tolist()):
                    terms = terms_of(p.category, p.attributes)
                    old = m.slots.assign(s, p.id, terms, q)
                    if old is not None:
                        m.postings.remove(s, old)
                    m.postings.add(s, terms)
                m.slots.mark_unindexed(sl)
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
