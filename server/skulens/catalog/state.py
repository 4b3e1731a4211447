"""The catalogue's memory: slots, the indexes, the filter postings, and the lock
that guards them; and how it is rebuilt at start-up.

Searches hold the read side of `rw`; applying a write or a batch of the
indexer's holds the write side (hnswlib must not change under a walk).
`version` is bumped by every applied write, so cached filter masks know when
they are stale. `backlog` is notified whenever the graph's backlog (the
unindexed slots) grows or shrinks.

Start-up: the newest valid snapshot (graph + kernel rows) plus the rows SQLite
changed after it, or SQLite alone. The graph then catches up in the background
with whatever it lacks (`indexer.py`).
"""

from __future__ import annotations

import logging
import os
import threading

import numpy as np

from ..index import ExactIndex, HnswIndex
from . import snapshot as snap
from .filters import Postings
from .locks import RWLock
from .slots import Slots
from .store import Store

log = logging.getLogger("skulens.catalog")


class Memory:
    """What a search reads. Built by `load`."""

    def __init__(self, slots: Slots, exact: ExactIndex, graph: HnswIndex, text: ExactIndex | None,
                 postings: Postings):
        self.rw = RWLock()
        self.version = 0
        self.backlog = threading.Condition()
        self.slots, self.exact, self.graph, self.text, self.postings = slots, exact, graph, text, postings


def load(store: Store, path: str, params: dict, *, storage: str, ef: int, threads: int | None,
         text_dim: int | None, progress: bool) -> tuple[Memory, int, int]:
    """(memory, seq of the snapshot it started from, rows replayed after it)."""
    rows = store.scan_meta()
    slots = Slots(rows)
    postings = Postings()
    postings.grow(slots.capacity)
    postings.bulk_load((r[1], slots.terms[r[1]]) for r in rows)
    dim = params["dim"]

    live = np.fromiter((r[1] for r in rows), dtype=np.int64, count=len(rows))
    seqs = np.fromiter((r[2] for r in rows), dtype=np.int64, count=len(rows))
    exact, graph, base, indexed = _load_snapshot(store, path, params, storage, threads, live, seqs)
    if graph is None:
        graph = HnswIndex(dim, params["M"], params["ef_construction"], ef, threads, capacity=slots.capacity)
        indexed = np.zeros(0, np.int64)
        source = store.vectors_of(live)  # everything: one sequential scan
        todo = len(live)
    else:
        source = store.vectors_after(base)  # changed since the snapshot: the seq index
        todo = int(np.count_nonzero(seqs > base))
    graph.ef = ef
    bar = progress_bar(todo, "loading vectors", progress and todo > 10_000)
    for part_slots, vecs in source:
        exact.upsert(part_slots, vecs)
        bar.update(len(part_slots))
    bar.close()
    rest = np.setdiff1d(live, indexed, assume_unique=True)
    slots.mark_unindexed(rest)
    text = None
    if text_dim:
        # Title embeddings of another model get their own exact index, so text
        # queries search titles until a trained model aligns text with images.
        text = ExactIndex(text_dim, "fp32", threads=threads)
        for part_slots, vecs in store.text_vectors(text_dim):
            text.upsert(part_slots, vecs)
    log.info("catalogue %s: %d products, %d replayed after snapshot seq %d, %d to add to the graph",
             path, len(rows), todo, base, len(rest))
    return Memory(slots, exact, graph, text, postings), base, todo


def _load_snapshot(store: Store, path: str, params: dict, storage: str, threads, live: np.ndarray,
                   seqs_db: np.ndarray):
    """(kernel, graph, seq, slots the graph holds current vectors of) of the newest usable
    snapshot; (empty kernel, None, 0, None) if there is none."""
    root = os.path.join(path, "snapshots")
    fresh = lambda: ExactIndex(params["dim"], storage, threads=threads)  # noqa: E731
    seqs = snap.list_snapshots(root)
    if not seqs:
        if len(live):
            log.warning("catalogue %s: no snapshot; rebuilding the indexes from SQLite", path)
        return fresh(), None, 0, None
    for s in seqs:
        exact = fresh()
        try:
            if s > store.seq:
                raise ValueError(f"newer than the database (seq {store.seq})")
            graph, snap_seq = snap.load(root, s, params, threads, exact)
            old = seqs_db <= s  # rows unchanged since the snapshot must be in it as they are
            keep = live[old]
            if len(keep) and (keep.max() >= len(snap_seq) or (snap_seq[keep] != seqs_db[old]).any()):
                raise ValueError("disagrees with the database")
        except (ValueError, OSError, RuntimeError) as e:
            log.warning("catalogue %s: snapshot %d unusable (%s); trying an older one", path, s, e)
            continue
        # Rows the snapshot has that the database changed or dropped since are
        # hidden; changed ones come back with the replay.
        exact.remove(np.setdiff1d(np.flatnonzero(snap_seq), keep, assume_unique=True))
        in_graph = graph.live_ids()
        indexed = np.intersect1d(keep, in_graph, assume_unique=True)
        graph.remove(np.setdiff1d(in_graph, indexed, assume_unique=True))
        return exact, graph, s, indexed
    log.warning("catalogue %s: no usable snapshot; rebuilding the indexes from SQLite", path)
    return fresh(), None, 0, None


class _NoBar:
    def update(self, n):
        pass

    def close(self):
        pass


def progress_bar(total: int, desc: str, show: bool):
    if not show:
        return _NoBar()
    from tqdm import tqdm
    return tqdm(total=total, desc=desc, unit="product", smoothing=0.1)
