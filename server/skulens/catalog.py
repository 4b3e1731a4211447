"""The product catalogue: SQLite truth, exact kernel + HNSW in memory, filters.

Write path: validate everything -> one SQLite transaction (the ack point) ->
apply to the in-memory indexes under the write side of a reader-writer lock.
A write returns only after both, so the next search sees it.

Search path: parse filter -> bitset of slots -> exact kernel scan (small
catalogue, selective filter, or mode="exact") or HNSW candidates, re-scored by
the kernel's `rerank` in mode="auto" -> ids.

Each product lives in a *slot*: its row in the kernel and its label in the
graph. Deletes free slots, inserts reuse the lowest free one, so memory follows
the live count, not the history. Slots are stored in SQLite, so a snapshot
and the database agree on them.
"""

from __future__ import annotations

import fcntl
import heapq
import json
import logging
import math
import numbers
import os
import shutil
import threading
import time
from itertools import repeat
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Iterable, NamedTuple

import numpy as np

from . import filters as flt
from . import snapshot as snap
from .errors import InvalidArgument, SkulensError, Unavailable
from .hnsw import LIVE, HnswIndex, ShortResult
from .index import STORAGES, Bits, ExactIndex, allow_bitset
from .locks import RWLock
from .store import Store, encode_attributes

log = logging.getLogger("skulens.catalog")

MAX_ID_BYTES = 256
MAX_TEXT = 4096
MAX_ATTRIBUTES = 64
MAX_K = 10_000
MAX_THUMBNAIL = 1 << 20
MODES = ("auto", "exact", "ann")

# Measured by `python bench/catalog_bench.py --calibrate` (docs/catalog.md, d=256):
# an exact scan of up to ~2,000 rows costs less than HNSW at recall 0.98, and it
# is exact; a filtered graph walk visits about ef / (matching fraction) nodes, so
# scanning the matches exactly is faster up to ~10,000 of them.
EXACT_BELOW = 2_000
EXACT_FILTERED_BELOW = 10_000


@dataclass(slots=True)
class Product:
    id: str
    sku: str = ""
    title: str = ""
    category: str = ""
    attributes: dict[str, str] = field(default_factory=dict)
    vector: np.ndarray | None = None
    text_vector: np.ndarray | None = None
    created: float | None = None
    updated: float | None = None
    thumbnail: bytes | None = None  # small reference image (JPEG/PNG); stored apart, not returned by get


class Hit(NamedTuple):
    id: str
    score: float


_FIELDS = set(Product.__dataclass_fields__)


@dataclass(slots=True, eq=False)
class _Write:
    """One caller's write waiting in the group-commit queue."""
    kind: str                  # "upsert" (items: Products) or "delete" (items: ids)
    items: list
    slots: list = field(default_factory=list)
    present: list = field(default_factory=list)
    done: bool = False
    result: int = 0
    error: BaseException | None = None


class Catalog:
    """A durable catalogue of products searchable by cosine similarity."""

    # --- opening -----------------------------------------------------------------
    @classmethod
    def open(cls, path: str, dim: int, *, storage: str = "fp32", M: int = 16, ef_construction: int = 100,
             ef: int = 64, threads: int | None = None, exact_below: int = EXACT_BELOW,
             exact_filtered_below: int = EXACT_FILTERED_BELOW, snapshot_every: int = 100_000,
             keep_snapshots: int = 2, max_unindexed: int = 100_000, text_dim: int | None = None,
             progress: bool = False) -> "Catalog":
        """Open (or create) the catalogue in folder `path` for `dim`-d vectors.

        Returns as soon as the exact kernel is loaded: searches are correct at
        once, and products the graph does not hold yet (after a rebuild, or a
        burst of upserts) are scanned exactly until the background indexer has
        added them (`wait_indexed()` waits for it)."""
        if isinstance(dim, bool) or not isinstance(dim, numbers.Integral) or not 0 < dim <= 65536:
            raise InvalidArgument(f"dim must be an integer in 1..65536, got {dim!r}")
        if storage not in STORAGES:
            raise InvalidArgument(f"storage must be one of {STORAGES}, got {storage!r}")
        self = cls.__new__(cls)
        self.path = os.fspath(path)
        self.dim = int(dim)
        self.storage = storage
        self.params = {"dim": self.dim, "storage": storage, "M": int(M), "ef_construction": int(ef_construction)}
        self.ef = int(ef)
        self.threads = threads
        self.exact_below = int(exact_below)
        self.exact_filtered_below = int(exact_filtered_below)
        self.snapshot_every = int(snapshot_every)
        self.keep_snapshots = int(keep_snapshots)
        self.max_unindexed = int(max_unindexed)
        # Title embeddings of another model (text_dim) get their own exact index, so
        # text queries search titles until a trained model aligns text with images.
        self.text_dim = int(text_dim) if text_dim else None
        self._progress = progress
        self._closed = True
        self._failed: BaseException | None = None
        os.makedirs(self.path, exist_ok=True)
        self._lock_fd = os.open(os.path.join(self.path, "LOCK"), os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(self._lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(self._lock_fd)
            raise Unavailable(f"catalogue {self.path} is open in another process") from None
        try:
            t0 = time.perf_counter()
            self._store = Store(os.path.join(self.path, "catalog.db"), self.dim)
            self._load()
            self.startup_s = time.perf_counter() - t0
        except BaseException:
            if hasattr(self, "_store"):
                self._store.close()
            os.close(self._lock_fd)
            raise
        self._closed = False
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._bg = threading.Thread(target=self._checkpointer, name="skulens-checkpoint", daemon=True)
        self._bg.start()
        self._indexer_thread = threading.Thread(target=self._indexer, name="skulens-indexer", daemon=True)
        self._indexer_thread.start()
        return self

    def _load(self) -> None:
        """Rebuild memory from the newest valid snapshot plus newer rows, or from SQLite alone."""
        self._rw = RWLock()
        self._wmu = threading.Lock()        # writers (transaction + apply), checkpoints
        self._qlock = threading.Lock()      # the group-commit queue
        self._queue: list[_Write] = []
        self._graph_mu = threading.Lock()   # the indexer's batches, checkpoints
        self._idx_cv = threading.Condition()
        self._stop_indexer = False
        self._stats_lock = threading.Lock()
        self._count_keys = ("exact", "ann", "auto_exact", "auto_ann", "ann_fallback")
        self._all_counts: list[dict] = []
        self._tl = threading.local()
        self._version = 0  # bumped by every applied write (under the write lock)
        self._mask_cache: OrderedDict = OrderedDict()
        self._mask_lock = threading.Lock()
        rows = self._store.scan_meta()
        self._high = max((r[1] for r in rows), default=-1) + 1
        cap = max(self._high, 1024)
        self._slot_id: list[str | None] = [None] * self._high
        self._slot_terms: list[tuple | None] = [None] * self._high
        self._slot_seq = np.zeros(cap, dtype=np.int64)
        self._unindexed: set[int] = set()  # live slots whose current vector the graph lacks
        self._unidx_bits = np.zeros((cap + 7) // 8, dtype=np.uint8)
        self._id_slot: dict[str, int] = {}
        self._postings = flt.Postings()
        self._postings.grow(cap)
        # Products share categories and attribute sets: decode each distinct
        # (category, attributes) once and share the terms tuple between them.
        memo: dict[tuple[str, str], tuple] = {}
        loads, terms_of = json.loads, flt.terms_of
        for pid, slot, seq, category, attrs in rows:
            self._id_slot[pid] = slot
            self._slot_id[slot] = pid
            key = (category, attrs)
            terms = memo.get(key)
            if terms is None:
                terms = terms_of(category, loads(attrs))
                if len(memo) < 200_000:
                    memo[key] = terms
            self._slot_terms[slot] = terms
        if rows:
            self._slot_seq[[r[1] for r in rows]] = [r[2] for r in rows]
        self._postings.bulk_load((r[1], self._slot_terms[r[1]]) for r in rows)
        used = np.zeros(self._high, dtype=bool)
        used[[r[1] for r in rows]] = True
        self._free = np.flatnonzero(~used).tolist()  # sorted: already a heap
        self._exact = ExactIndex(self.dim, self.storage, threads=self.threads)

        slots = np.fromiter((r[1] for r in rows), dtype=np.int64, count=len(rows))
        seqs = np.fromiter((r[2] for r in rows), dtype=np.int64, count=len(rows))
        self._graph, base, indexed = self._load_snapshot(slots, seqs)
        if self._graph is None:
            self._graph = HnswIndex(self.dim, self.params["M"], self.params["ef_construction"], self.ef,
                                    self.threads, capacity=cap)
            indexed = np.zeros(0, np.int64)
            source = self._store.vectors_of(slots)  # everything: one sequential scan
            todo = len(slots)
        else:
            source = self._store.vectors_after(base)  # changed since the snapshot: the seq index
            todo = int(np.count_nonzero(seqs > base))
        self._graph.ef = self.ef
        bar = _progress(todo, "loading vectors", self._progress and todo > 10_000)
        for part_slots, vecs in source:
            self._exact.upsert(part_slots, vecs)
            bar.update(len(part_slots))
        bar.close()
        # The graph catches up in the background with whatever it lacks.
        rest = np.setdiff1d(slots, indexed, assume_unique=True)
        self._mark_unindexed(rest)
        self._text = None
        if self.text_dim:
            self._text = ExactIndex(self.text_dim, "fp32", threads=self.threads)
            for part_slots, vecs in self._store.text_vectors(self.text_dim):
                self._text.upsert(part_slots, vecs)
        self._snapshot_seq = base
        self._changes = todo
        self._indexed_since_snapshot = 0
        log.info("catalogue %s: %d products, %d replayed after snapshot seq %d, %d to add to the graph",
                 self.path, len(rows), todo, base, len(rest))

    def _load_snapshot(self, slots: np.ndarray, seqs_db: np.ndarray):
        """(graph, seq, slots the graph holds current vectors of) of the newest
        usable snapshot, its rows loaded into the kernel; (None, 0, None) if none."""
        root = os.path.join(self.path, "snapshots")
        seqs = snap.list_snapshots(root)
        if not seqs:
            if len(slots):
                log.warning("catalogue %s: no snapshot; rebuilding the indexes from SQLite", self.path)
            return None, 0, None
        for s in seqs:
            try:
                if s > self._store.seq:
                    raise ValueError(f"newer than the database (seq {self._store.seq})")
                graph, snap_seq = snap.load(root, s, self.params, self.threads, self._exact)
                old = seqs_db <= s  # rows unchanged since the snapshot must be in it as they are
                keep = slots[old]
                if len(keep) and (keep.max() >= len(snap_seq) or (snap_seq[keep] != seqs_db[old]).any()):
                    raise ValueError("disagrees with the database")
            except (ValueError, OSError, RuntimeError) as e:
                log.warning("catalogue %s: snapshot %d unusable (%s); trying an older one", self.path, s, e)
                self._exact = ExactIndex(self.dim, self.storage, threads=self.threads)
                continue
            # Rows the snapshot has that the database changed or dropped since are
            # hidden; changed ones come back with the replay.
            self._exact.remove(np.setdiff1d(np.flatnonzero(snap_seq), keep, assume_unique=True))
            state = graph._state
            indexed = keep[keep < len(state)]
            indexed = np.sort(indexed[state[indexed] == LIVE])
            graph.remove(np.setdiff1d(np.flatnonzero(state == LIVE), indexed, assume_unique=True))
            return graph, s, indexed
        log.warning("catalogue %s: no usable snapshot; rebuilding the indexes from SQLite", self.path)
        return None, 0, None

    def _mark_unindexed(self, slots) -> None:
        for x in np.asarray(slots).tolist():
            self._unindexed.add(x)
            self._unidx_bits[x >> 3] |= 1 << (x & 7)
        if len(slots):
            with self._idx_cv:
                self._idx_cv.notify_all()

    def _mark_indexed(self, slots) -> None:
        for x in np.asarray(slots).tolist():
            self._unindexed.discard(x)
            self._unidx_bits[x >> 3] &= ~(1 << (x & 7)) & 0xFF

    # --- lifecycle ---------------------------------------------------------------
    def __enter__(self) -> "Catalog":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self, drain_timeout: float = 30.0) -> None:
        """Let the indexer finish (up to drain_timeout s), write a snapshot if
        anything changed, then release the folder. What the graph still lacks
        is re-added in the background after the next open."""
        if self._closed:
            return
        if self._indexer_thread.is_alive():
            self.wait_indexed(drain_timeout)
        with self._idx_cv:
            self._stop_indexer = True
            self._idx_cv.notify_all()
        self._indexer_thread.join()
        self._stop.set()
        self._wake.set()
        self._bg.join()
        with self._wmu:
            if self._changes or self._indexed_since_snapshot:
                self._checkpoint_locked()
            self._rw.acquire_write()
            self._closed = True
            self._rw.release_write()
            self._store.close()
            os.close(self._lock_fd)

    def _check_open(self) -> None:
        if self._closed:
            raise Unavailable(f"catalogue {self.path} is closed")
        if self._failed is not None:
            raise Unavailable(f"catalogue {self.path} must be reopened after an internal error: {self._failed}")

    # --- writes ------------------------------------------------------------------
    def upsert(self, products: Iterable) -> int:
        """Insert or replace products in one durable transaction; returns its seq."""
        if isinstance(products, (Product, dict)):
            products = [products]
        items = [self._coerce(p) for p in products]
        if not items:
            return self._store.seq
        ids = [p.id for p in items]
        if len(set(ids)) != len(ids):
            raise InvalidArgument("the same product id appears twice in one upsert")
        # Back-pressure: writers wait while the graph is far behind, so the
        # exact scan of not-yet-indexed products stays bounded.
        with self._idx_cv:
            while len(self._unindexed) >= self.max_unindexed and not self._closed:
                self._idx_cv.wait(0.5)
        return self._submit(_Write("upsert", items))

    def delete(self, ids: Iterable[str]) -> int:
        """Delete products by id in one durable transaction; returns how many existed."""
        if isinstance(ids, str):
            ids = [ids]
        ids = list(dict.fromkeys(ids))
        for i in ids:
            _check_id(i)
        return self._submit(_Write("delete", ids))

    def _submit(self, w: "_Write"):
        """Group commit: whoever holds the writer mutex commits every write queued
        so far in one transaction (one fsync), applies them in order, and wakes
        their callers. Under concurrent writers this turns N fsyncs into ~1."""
        with self._qlock:
            self._queue.append(w)
        with self._wmu:
            if not w.done:
                with self._qlock:
                    group, self._queue = self._queue, []
                self._commit_group(group)
        if w.error is not None:
            raise w.error
        return w.result

    def _commit_group(self, group: list["_Write"]) -> None:
        try:
            self._check_open()
        except Unavailable as e:
            for w in group:
                w.error, w.done = e, True
            return
        now = time.time()
        overlay: dict[str, int | None] = {}  # id -> slot as the group's earlier writes leave it
        ops, fresh = [], []
        for w in group:
            if w.kind == "upsert":
                w.slots = []
                for p in w.items:
                    s = overlay[p.id] if p.id in overlay else self._id_slot.get(p.id)
                    if s is None:
                        s = self._alloc()
                        fresh.append(s)
                    overlay[p.id] = s
                    w.slots.append(s)
                rows = [(p.id, s, p.sku, p.title, p.category, encode_attributes(p.attributes),
                         p.vector.tobytes(), None if p.text_vector is None else p.text_vector.tobytes(), now, now)
                        for p, s in zip(w.items, w.slots)]
                ops.append(("upsert", rows, [(p.id, p.thumbnail) for p in w.items if p.thumbnail is not None]))
            else:
                w.present = [i for i in w.items
                             if (overlay[i] if i in overlay else self._id_slot.get(i)) is not None]
                for i in w.present:
                    overlay[i] = None
                if w.present:
                    ops.append(("delete", w.present, ()))
        try:
            seq = self._store.write(ops) if ops else self._store.seq
        except BaseException as e:  # nothing of the group is acknowledged
            for s in fresh:
                heapq.heappush(self._free, s)
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
            self._failed = e
            for w in group:
                if not w.done:
                    w.error, w.done = Unavailable(f"catalogue {self.path} must be reopened: {e}"), True
            raise
        self._wrote(n)

    def _apply_text(self, items: list[Product], slots: np.ndarray) -> None:
        has = [p.text_vector is not None for p in items]
        if any(has):
            self._text.upsert(slots[has], np.stack([p.text_vector for p, h in zip(items, has) if h]))
        gone = [int(s) for s, h in zip(slots, has) if not h and s in self._text]
        if gone:
            self._text.remove(gone)

    def _apply_deletes(self, ids: list[str]) -> None:
        self._rw.acquire_write()
        try:
            for i in ids:
                s = self._id_slot.pop(i)
                self._exact.remove([s])
                self._graph.remove([s])
                self._mark_indexed([s])
                if self._text is not None and s in self._text:
                    self._text.remove([s])
                self._postings.remove(s, self._slot_terms[s])
                self._slot_id[s] = self._slot_terms[s] = None
                self._slot_seq[s] = 0
                heapq.heappush(self._free, s)
            self._version += 1
        finally:
            self._rw.release_write()

    def _alloc(self) -> int:
        if self._free:
            return heapq.heappop(self._free)
        s = self._high
        self._high += 1
        self._slot_id.append(None)
        self._slot_terms.append(None)
        if s >= len(self._slot_seq):
            # Under the write lock: the indexer flips bits in these arrays too.
            self._rw.acquire_write()
            try:
                self._slot_seq = np.concatenate([self._slot_seq, np.zeros(len(self._slot_seq), np.int64)])
                self._unidx_bits = np.concatenate([self._unidx_bits, np.zeros(len(self._unidx_bits), np.uint8)])
                self._postings.grow(len(self._slot_seq))
            finally:
                self._rw.release_write()
        return s

    def _apply_upserts(self, items: list[Product], slots: np.ndarray, seq: int, chunk: int = 1024) -> None:
        """Kernel and filters now; the graph's old version of an updated slot is
        hidden and the indexer adds the new one (exact scans cover it meanwhile)."""
        vecs = np.stack([p.vector for p in items])
        for a in range(0, len(items), chunk):
            b = min(a + chunk, len(items))
            self._rw.acquire_write()
            try:
                self._exact.upsert(slots[a:b], vecs[a:b])
                self._graph.remove(slots[a:b])
                if self._text is not None:
                    self._apply_text(items[a:b], slots[a:b])
                for p, s in zip(items[a:b], slots[a:b].tolist()):
                    old = self._slot_terms[s]
                    if old is not None:
                        self._postings.remove(s, old)
                    terms = flt.terms_of(p.category, p.attributes)
                    self._postings.add(s, terms)
                    self._slot_terms[s] = terms
                    self._slot_id[s] = p.id
                    self._id_slot[p.id] = s
                    self._slot_seq[s] = seq
                self._mark_unindexed(slots[a:b])
                self._version += 1
            finally:
                self._rw.release_write()

    # --- the background indexer ----------------------------------------------------
    def _indexer(self, batch: int = 128) -> None:
        """Adds unindexed slots to the graph, a batch per exclusive hold (a few ms).

        Vectors come from SQLite, checked against the slot's seq under the write
        lock, so a slot rewritten or deleted meanwhile is never indexed stale."""
        from itertools import islice
        while True:
            with self._idx_cv:
                while not self._unindexed and not self._stop_indexer:
                    self._idx_cv.wait()
                if self._stop_indexer:
                    return
            try:
                with self._graph_mu:
                    self._rw.acquire_read()
                    try:
                        todo = np.fromiter(islice(self._unindexed, batch), dtype=np.int64)
                    finally:
                        self._rw.release_read()
                    got_slots, got_seqs, vecs = self._store.rows_at(todo)
                    self._rw.acquire_write()
                    try:
                        ok = np.fromiter((s in self._unindexed for s in got_slots.tolist()), bool, len(got_slots))
                        ok &= self._slot_seq[got_slots] == got_seqs
                        self._graph.upsert(got_slots[ok], vecs[ok])
                        self._mark_indexed(got_slots[ok])
                    finally:
                        self._rw.release_write()
                    self._indexed_since_snapshot += int(ok.sum())
                    if not ok.any():
                        time.sleep(0.001)  # rows not committed-and-applied yet: let the writer finish
            except Exception:  # never lose the thread: products stay searchable exactly
                log.exception("catalogue %s: background indexing failed; retrying", self.path)
                time.sleep(0.5)
            with self._idx_cv:
                self._idx_cv.notify_all()
            if not self._unindexed and self._indexed_since_snapshot >= self.snapshot_every:
                self._wake.set()

    def wait_indexed(self, timeout: float | None = None) -> bool:
        """Block until the graph holds every product (True) or timeout passes (False)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        bar = _progress(len(self._unindexed), "indexing", self._progress and len(self._unindexed) > 10_000)
        last = len(self._unindexed)
        with self._idx_cv:
            while self._unindexed and not self._closed:
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    break
                self._idx_cv.wait(0.2 if left is None else min(left, 0.2))
                bar.update(max(0, last - len(self._unindexed)))
                last = len(self._unindexed)
        bar.close()
        return not self._unindexed

    def _wrote(self, n: int) -> None:
        self._changes += n
        if self._changes >= self.snapshot_every:
            self._wake.set()

    # --- snapshots ---------------------------------------------------------------
    def checkpoint(self) -> int:
        """Write a snapshot of the indexes now; returns the seq it contains."""
        with self._wmu:
            self._check_open()
            return self._checkpoint_locked()

    def _checkpoint_locked(self) -> int:
        seq = self._store.seq
        if seq != self._snapshot_seq or self._indexed_since_snapshot:
            # Writers wait on _wmu and the indexer on _graph_mu; searches go on
            # (saving only reads the graph). Slots not in the graph yet are
            # recorded as such by its state array and re-added after a restart.
            with self._graph_mu:
                snap.write(os.path.join(self.path, "snapshots"), seq, self._graph, self._exact,
                           self._slot_seq[: self._high], self.params, self.keep_snapshots, replace=True)
                self._indexed_since_snapshot = 0
            self._snapshot_seq = seq
        self._changes = 0
        return seq

    def _checkpointer(self) -> None:
        while True:
            self._wake.wait()
            self._wake.clear()
            if self._stop.is_set():
                return
            try:
                with self._wmu:
                    if not self._closed and max(self._changes, self._indexed_since_snapshot) >= self.snapshot_every:
                        self._checkpoint_locked()
            except Exception:  # a failed snapshot costs start-up time, never data
                log.exception("catalogue %s: background snapshot failed", self.path)

    def snapshot(self, dest: str) -> str:
        """A consistent backup in folder dest (SQLite online backup + index snapshot)
        while searches go on; writes wait until it is done."""
        dest = os.fspath(dest)
        if os.path.exists(dest) and os.listdir(dest):
            raise InvalidArgument(f"backup folder {dest} is not empty")
        with self._wmu:
            self._check_open()
            os.makedirs(dest, exist_ok=True)
            self._store.backup(os.path.join(dest, "catalog.db"))
            with self._graph_mu:
                snap.write(os.path.join(dest, "snapshots"), self._store.seq, self._graph, self._exact,
                           self._slot_seq[: self._high], self.params, 1)
        return dest

    @classmethod
    def restore(cls, src: str, path: str, dim: int, *, overwrite: bool = False, **options) -> "Catalog":
        """Copy the backup in src to folder path and open it there."""
        if not os.path.isfile(os.path.join(src, "catalog.db")):
            raise InvalidArgument(f"{src} is not a skulens backup (no catalog.db)")
        if os.path.exists(os.path.join(path, "catalog.db")):
            if not overwrite:
                raise InvalidArgument(f"{path} already holds a catalogue; pass overwrite=True to replace it")
            shutil.rmtree(path)
        shutil.copytree(src, path, dirs_exist_ok=True)
        return cls.open(path, dim, **options)

    # --- reads -------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self._id_slot)

    def __contains__(self, id_) -> bool:
        return id_ in self._id_slot

    def get(self, id_: str) -> Product | None:
        _check_id(id_)
        self._check_open()
        r = self._store.get([id_]).get(id_)
        return None if r is None else _product(r)

    def get_many(self, ids: list[str]) -> dict[str, Product]:
        for i in ids:
            _check_id(i)
        self._check_open()
        return {k: _product(r) for k, r in self._store.get(list(ids)).items()}

    def thumbnail(self, id_: str) -> bytes | None:
        _check_id(id_)
        self._check_open()
        return self._store.thumbnail(id_)

    def search(self, vector, k: int = 10, filters=None, mode: str = "auto", ef: int | None = None,
               field: str = "image") -> list[Hit]:
        """Products most similar to `vector`, best first (at most k; k whenever k match).

        field="text" searches the title embeddings (text_dim) exactly instead."""
        if field == "text":
            return self._search_text(vector, k, filters)
        if field != "image":
            raise InvalidArgument(f"field is 'image' or 'text', got {field!r}")
        q = _unit(vector, self.dim, "query vector")
        k = _count(k, "k")
        if mode not in MODES:
            raise InvalidArgument(f"mode must be one of {MODES}, got {mode!r}")
        if ef is not None:
            ef = _count(ef, "ef")
        clauses = flt.parse(filters) if filters else ()
        self._rw.acquire_read()
        try:
            self._check_open()
            allow = None
            n = len(self._id_slot)
            high = self._high  # writers may allocate slots meanwhile (not yet live): read it once
            if clauses:
                allow = self._filter_mask(clauses, high)
                n = allow.count()
            if n == 0:
                return []
            exact_max = self.exact_filtered_below if allow is not None else self.exact_below
            route = "exact" if mode == "exact" or (mode == "auto" and n <= exact_max) else "ann"
            # Inputs are checked above, once: the indexes are called on their trusted paths.
            if route == "ann":
                backlog = None
                n_graph = n
                if self._unindexed:  # products the graph lacks yet are scanned exactly
                    bits = self._unidx_bits[: (high + 7) // 8 if allow is None else len(allow.packed)]
                    backlog = Bits(bits if allow is None else bits & allow.packed[: len(bits)])
                    n_graph = n - backlog.count()
                try:
                    # auto: the walk's top k re-scored by the kernel in the same call,
                    # whose scores exact mode returns too (bit-identical across routes).
                    scores, slots = self._graph.search_unit(q, k, self.ef if ef is None else ef, allow, n_graph,
                                                            self._exact._ix if mode == "auto" else None)
                except ShortResult:
                    route = "fallback"
                else:
                    if backlog is not None:
                        bs, bl = self._exact._ix.search(q[None, :], k, allow_bitset(backlog))
                        good = bl[0] >= 0
                        scores = np.concatenate([scores, bs[0][good]])
                        slots = np.concatenate([slots, bl[0][good]])
                        order = np.lexsort((slots, -scores))[:k]
                        scores, slots = scores[order], slots[order]
            if route != "ann":
                scores, slots = self._exact._ix.search(q[None, :], k, allow_bitset(allow))
                scores, slots = scores[0], slots[0]
                good = slots >= 0
                scores, slots = scores[good], slots[good]
            # C-level iteration only: this runs right after the graph walk has
            # evicted the interpreter's caches, where every bytecode costs.
            hits = list(map(_hit, repeat(Hit), zip(map(self._slot_id.__getitem__, slots.tolist()),
                                                   scores.tolist())))
        finally:
            self._rw.release_read()
        counts = getattr(self._tl, "counts", None) or self._thread_counts()
        counts[_ROUTE_KEYS[mode, route]] += 1
        return hits

    def _thread_counts(self) -> dict:
        # Per-thread counters: no lock on the search path; stats() adds them up.
        c = dict.fromkeys(self._count_keys, 0)
        self._tl.counts = c
        with self._stats_lock:
            self._all_counts.append(c)
        return c

    def _search_text(self, vector, k, filters) -> list[Hit]:
        if self._text is None:
            raise InvalidArgument("this catalogue has no title embeddings (open it with text_dim)")
        q = _unit(vector, self.text_dim, "text query vector")
        k = _count(k, "k")
        clauses = flt.parse(filters) if filters else ()
        self._rw.acquire_read()
        try:
            self._check_open()
            allow = self._filter_mask(clauses, self._high) if clauses else None
            scores, slots = self._text._ix.search(q[None, :], k, allow_bitset(allow))
            good = slots[0] >= 0
            return [Hit(self._slot_id[s], float(sc)) for s, sc in zip(slots[0][good].tolist(), scores[0][good].tolist())]
        finally:
            self._rw.release_read()

    def _filter_mask(self, clauses, high: int) -> Bits:
        """The filter's bitset, cached until the next write: shops filter by the
        same few categories over and over, and at 1M products building a mask
        costs more than the cache lookup."""
        with self._mask_lock:
            hit = self._mask_cache.get(clauses)
            if hit is not None and hit[0] == self._version:
                self._mask_cache.move_to_end(clauses)
                return hit[1]
        bits = self._postings.mask(clauses, high)
        with self._mask_lock:
            self._mask_cache[clauses] = (self._version, bits)
            self._mask_cache.move_to_end(clauses)
            while len(self._mask_cache) > 16:
                self._mask_cache.popitem(last=False)
        return bits

    def stats(self) -> dict:
        self._check_open()
        with self._stats_lock:
            counts = {k: sum(c[k] for c in self._all_counts) for k in self._count_keys}
        return {
            "products": len(self), "dim": self.dim, "storage": self.storage, "slots": self._high,
            "free_slots": len(self._free), "seq": self._store.seq, "snapshot_seq": self._snapshot_seq,
            "changes_since_snapshot": self._changes, "db_bytes": self._store.size_bytes(),
            "hnsw": {**self.params, "ef": self.ef, "capacity": self._graph.capacity,
                     "deleted": self._graph.deleted_count(), "unindexed": len(self._unindexed)},
            "exact_below": self.exact_below, "exact_filtered_below": self.exact_filtered_below,
            "searches": counts, "startup_s": round(self.startup_s, 3),
        }

    # --- input checking ----------------------------------------------------------
    def _coerce(self, p) -> Product:
        if isinstance(p, dict):
            extra = set(p) - _FIELDS
            if extra:
                raise InvalidArgument(f"unknown product field(s) {sorted(extra)}; expected {sorted(_FIELDS)}")
            if "id" not in p:
                raise InvalidArgument("product has no id")
            p = Product(**p)
        elif not isinstance(p, Product):
            raise InvalidArgument(f"a product must be a Product or a dict, got {type(p).__name__}")
        _check_id(p.id)
        what = f"product {p.id!r}"
        text = {}
        for name in ("sku", "title", "category"):
            v = getattr(p, name)
            v = "" if v is None else v
            if not isinstance(v, str) or len(v) > MAX_TEXT:
                raise InvalidArgument(f"{what}: {name} must be a string of at most {MAX_TEXT} characters")
            text[name] = v
        attrs = {} if p.attributes is None else p.attributes
        if not isinstance(attrs, dict) or len(attrs) > MAX_ATTRIBUTES:
            raise InvalidArgument(f"{what}: attributes must be a dict of at most {MAX_ATTRIBUTES} entries")
        for k, v in attrs.items():
            if not isinstance(k, str) or not isinstance(v, str) or not k or len(k) > 256 or len(v) > MAX_TEXT:
                raise InvalidArgument(f"{what}: attribute {k!r}={v!r} must map a non-empty string "
                                      f"to a string")
            if k == "category":
                raise InvalidArgument(f"{what}: 'category' is a product field, not an attribute")
        if p.vector is None:
            raise InvalidArgument(f"{what} has no vector")
        vec = _unit(p.vector, self.dim, f"{what} vector")
        tvec = None if p.text_vector is None else _unit(p.text_vector, self.text_dim or self.dim,
                                                        f"{what} text_vector")
        if p.thumbnail is not None and (not isinstance(p.thumbnail, (bytes, bytearray))
                                        or len(p.thumbnail) > MAX_THUMBNAIL):
            raise InvalidArgument(f"{what}: thumbnail must be bytes of at most {MAX_THUMBNAIL}")
        return Product(p.id, text["sku"], text["title"], text["category"], dict(attrs), vec, tvec,
                       thumbnail=None if p.thumbnail is None else bytes(p.thumbnail))


_ROUTE_KEYS = {("exact", "exact"): "exact", ("ann", "ann"): "ann", ("ann", "fallback"): "ann_fallback",
               ("auto", "exact"): "auto_exact", ("auto", "ann"): "auto_ann", ("auto", "fallback"): "ann_fallback"}
_hit = tuple.__new__  # builds a Hit without NamedTuple's Python-level __new__ (hot path)


def _count(v, what: str) -> int:
    if type(v) is int and 1 <= v <= MAX_K:
        return v
    if type(v) is not int and (isinstance(v, bool) or not isinstance(v, numbers.Integral)):
        raise InvalidArgument(f"{what} must be an integer in 1..{MAX_K}, got {v!r}")
    if not 1 <= v <= MAX_K:
        raise InvalidArgument(f"{what} must be an integer in 1..{MAX_K}, got {v!r}")
    return int(v)


def _check_id(i) -> None:
    if not isinstance(i, str) or not i:
        raise InvalidArgument(f"a product id must be a non-empty string, got {i!r}")
    if len(i.encode("utf-8", "surrogatepass")) > MAX_ID_BYTES:
        raise InvalidArgument(f"product id longer than {MAX_ID_BYTES} bytes: {i[:40]!r}...")


def _unit(v, dim: int, what: str) -> np.ndarray:
    """A finite non-zero vector of `dim` floats, L2-normalised as float32."""
    if type(v) is np.ndarray and v.dtype == np.float32 and v.shape == (dim,):
        # Fast path for the common query: a finite sum of squares proves every
        # element finite (NaN/Inf propagate), so one dot product checks it all.
        n2 = float(v.dot(v))
        if 0.0 < n2 < math.inf:
            return v * (1.0 / math.sqrt(n2))  # a Python float keeps the result float32
    try:
        a = np.asarray(v, dtype=np.float64)
    except (TypeError, ValueError) as e:
        raise InvalidArgument(f"{what} must be numeric: {e}") from None
    if a.ndim == 2 and a.shape[0] == 1:
        a = a[0]
    if a.shape != (dim,):
        raise InvalidArgument(f"{what} has shape {a.shape}; the catalogue holds {dim}-d vectors")
    if not np.isfinite(a).all():
        raise InvalidArgument(f"{what} contains NaN or Inf")
    norm = np.linalg.norm(a)
    if norm == 0 or not np.isfinite(norm):
        raise InvalidArgument(f"{what} is zero (or its norm overflows); cosine needs a direction")
    return (a / norm).astype(np.float32)


def _product(r) -> Product:
    return Product(r.id, r.sku, r.title, r.category, r.attributes, r.vector, r.text_vector, r.created, r.updated)


class _NoBar:
    def update(self, n):
        pass

    def close(self):
        pass


def _progress(total: int, desc: str, show: bool):
    if not show:
        return _NoBar()
    from tqdm import tqdm
    return tqdm(total=total, desc=desc, unit="product", smoothing=0.1)


__all__ = ["Catalog", "Product", "Hit", "SkulensError"]
