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

from ..errors import InvalidArgument, NotFound, Unavailable
from ..limits import MAX_IMAGES
from .filters import terms_of
from .product import Product
from .state import Memory
from .store import Changes, Partition

log = logging.getLogger("skulens.catalog")


@dataclass(slots=True, eq=False)
class Write:
    """One caller's write waiting in the group-commit queue."""
    kind: str                  # "upsert" (items: Products), "delete" (items: ids), or "images":
    items: list                #   items = [product id, {name: vector} to add, {name: thumbnail}, [names] to remove]
    present: list = field(default_factory=list)   # delete: the ids that existed; images: [the product as written]
    changed: int = 0           # images: how many images it added, replaced or removed
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
                edited = list({w.items[0] for w in group if w.kind == "images"})
                # id -> the product as the group's earlier writes leave it (None: deleted), for image edits
                latest = store.get_locked(edited) if edited else {}
                here: dict[str, bool] = {}  # id -> exists, as the group's earlier writes leave it
                ops = []
                for w in group:
                    if w.kind == "upsert":
                        here.update((p.id, True) for p in w.items)
                        latest.update((p.id, p) for p in w.items)
                        ops.append(("upsert", w.items))
                    elif w.kind == "images":
                        p = edit_images(w, latest.get(w.items[0]))
                        if p is not None:
                            here[p.id], latest[p.id] = True, p
                            if w.changed:
                                ops.append(("upsert", [p]))
                    else:
                        w.present = [i for i in w.items if here.get(i, i in stored)]
                        here.update((i, False) for i in w.present)
                        latest.update((i, None) for i in w.present)
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
                if w.done:  # an image edit refused on its own (no such product, too many images)
                    continue
                if w.kind == "images":
                    if w.changed and self.partition.holds(w.items[0]):
                        self._apply_upserts(w.present, np.full(1, seq, np.int64))
                    w.result, w.done = seq, True
                    n += 1
                    continue
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
                for name in reversed(m.slots.images_of(i)):  # extra images first, the main one last
                    self._drop(i, name)
            m.version += 1
        finally:
            m.rw.release_write()

    def _drop(self, pid: str, name: str) -> None:
        """One image out of the indexes (under the write lock)."""
        m = self.mem
        s, terms = m.slots.release(pid, name)
        m.exact.remove([s])
        m.graph.remove([s])
        if m.text is not None and s in m.text:
            m.text.remove([s])
        m.postings.remove(s, terms)

    def _apply_upserts(self, items: list[Product], seqs: np.ndarray, chunk: int = 1024) -> None:
        """Kernel and filters now, one slot per image; the graph's old version of an updated slot
        is hidden and the indexer adds the new one (exact scans cover it meanwhile). Images the
        product no longer has leave the indexes."""
        m = self.mem
        for a in range(0, len(items), chunk):
            part, qs = items[a:a + chunk], seqs[a:a + chunk].tolist()
            main, sl, vecs, gone = [], [], [], []
            for p in part:  # ids are distinct within one call: each new image gets its own slot
                had = m.slots.images_of(p.id)
                for name, v in (("", p.vector), *p.images.items()):
                    s = had.pop(name, None)
                    sl.append(self._alloc() if s is None else s)
                    vecs.append(v)
                main.append(sl[-1 - len(p.images)])
                gone += [(p.id, name) for name in had]
            sl_arr = np.asarray(sl, np.int64)
            m.rw.acquire_write()
            try:
                for pid, name in gone:
                    self._drop(pid, name)
                m.exact.upsert(sl_arr, np.stack(vecs))
                m.graph.remove(sl_arr)
                if m.text is not None:
                    self._apply_text(part, np.asarray(main, np.int64))
                it = iter(sl)
                for p, q in zip(part, qs):
                    terms = terms_of(p.category, p.attributes)
                    for name in ("", *p.images):
                        s = next(it)
                        old = m.slots.assign(s, p.id, terms, q, name)
                        if old is not None:
                            m.postings.remove(s, old)
                        m.postings.add(s, terms)
                m.slots.mark_unindexed(sl_arr)
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


def edit_images(w: Write, p: Product | None) -> Product | None:
    """The product after image edit w (None and w refused when there is no such product, or
    when it would hold more than MAX_IMAGES); w.changed counts what it changed."""
    pid, add, thumbs, remove = w.items
    if p is None:
        w.error, w.done = NotFound(f"no product with id {pid!r}"), True
        return None
    images = dict(p.images)
    w.changed = sum(images.pop(name, None) is not None for name in remove) + len(add)
    images.update(add)
    if len(images) + 1 > MAX_IMAGES:
        w.error, w.done = InvalidArgument(f"product {pid!r} would hold {len(images) + 1} images; "
                                          f"at most {MAX_IMAGES}"), True
        return None
    out = Product(p.id, p.sku, p.title, p.category, p.attributes, p.vector, p.text_vector,
                  images=images, image_thumbnails=dict(thumbs))
    w.present = [out]
    return out
