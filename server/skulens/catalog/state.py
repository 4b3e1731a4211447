"""The catalogue's memory: slots, the indexes, the filter postings, and the lock
that guards them; and how it is rebuilt at start-up.

Searches hold the read side of `rw`; applying a write or a batch of the
indexer's holds the write side (hnswlib must not change under a walk).
`version` is bumped by every applied write, so cached filter masks know when
they are stale. `backlog` is notified whenever the graph's backlog (the
unindexed slots) grows or shrinks.

Start-up: the newest valid snapshot (graph + kernel rows, and which product each
slot holds) plus the rows the store changed after it, or the store alone, all
read in one consistent view of the store. The graph then catches up in the background
with whatever it lacks (`indexer.py`).
"""

from __future__ import annotations

import itertools
import json
import logging
import os
import threading

import numpy as np

from ..index import ExactIndex, HnswIndex
from . import snapshot as snap
from .filters import Postings
from .locks import RWLock
from .slots import Slots

log = logging.getLogger("skulens.catalog")


class Memory:
    """What a search reads. Built by `load`. `applied`: the store's seq this memory holds
    every change up to (its own writes and, on a shared store, other processes')."""

    def __init__(self, slots: Slots, exact: ExactIndex, graph: HnswIndex, text: ExactIndex | None,
                 postings: Postings, applied: int):
        self.rw = RWLock()
        self.version = 0
        self.backlog = threading.Condition()
        self.slots, self.exact, self.graph, self.text, self.postings = slots, exact, graph, text, postings
        self.applied = applied


def load(store, path: str, params: dict, *, storage: str, ef: int, threads: int | None,
         text_dim: int | None, progress: bool) -> tuple[Memory, int, int]:
    """(memory, seq of the snapshot it started from, rows replayed after it)."""
    with store.view() as head:
        meta = store.scan_meta()
        rows = _image_rows(meta)   # one per image: (id, name, seq, category, attributes)
        dim = params["dim"]
        seqs = np.fromiter((r[2] for r in rows), dtype=np.int64, count=len(rows))
        exact, graph, base, snap_slot = _load_snapshot(store, path, params, storage, threads, rows, seqs, head)
        slots = Slots(_with_slots(rows, snap_slot))
        postings = Postings()
        postings.grow(slots.capacity)
        slot_for = slots.slot_for
        postings.bulk_load((s, slots.terms[s]) for s in (slot_for(r[0], r[1]) for r in rows))
        live = slots.live()
        if graph is None:
            graph = HnswIndex(dim, params["M"], params["ef_construction"], ef, threads, capacity=slots.capacity)
            indexed = np.zeros(0, np.int64)
            source, todo = store.vectors(), len(meta)           # everything: one sequential scan
        else:
            kept = np.fromiter((slot_for(r[0], r[1]) for r in rows if r[2] <= base), np.int64)
            # Snapshot rows whose product is gone or changed since are hidden; changed ones come back below.
            exact.remove(np.setdiff1d(np.fromiter(snap_slot.values(), np.int64, len(snap_slot)), kept))
            in_graph = graph.live_ids()
            indexed = np.intersect1d(kept, in_graph)
            graph.remove(np.setdiff1d(in_graph, indexed, assume_unique=True))
            source, todo = store.vectors(after=base), sum(1 for r in meta if r[1] > base)
        graph.ef = ef
        bar = progress_bar(todo, "loading vectors", progress and todo > 10_000)
        for ids, names, vecs in source:
            exact.upsert(np.fromiter(map(slot_for, ids, names), np.int64, len(ids)), vecs)
            bar.update(names.count(""))
        bar.close()
        rest = np.setdiff1d(live, indexed)
        slots.mark_unindexed(rest)
        text = None
        if text_dim:
            # Title embeddings of another model get their own exact index, so text
            # queries search titles until a trained model aligns text with images.
            text = ExactIndex(text_dim, "fp32", threads=threads)
            for ids, vecs in store.text_vectors(text_dim):
                text.upsert(np.fromiter((slots.slot_of[i] for i in ids), np.int64, len(ids)), vecs)
    log.info("catalogue %s: %d products (%d images), %d replayed after snapshot seq %d, %d to add to the graph",
             path, len(meta), len(rows), todo, base, len(rest))
    return Memory(slots, exact, graph, text, postings, head), base, todo


def _image_rows(meta) -> list[tuple]:
    """Rows (id, seq, category, attributes, image names) as one row per image: (id, name, seq,
    category, attributes), the main image's name ""."""
    out = []
    for pid, seq, category, attrs, names in meta:
        out.append((pid, "", seq, category, attrs))
        if names is not None:
            out += [(pid, n, seq, category, attrs) for n in json.loads(names)]
    return out


def _with_slots(rows, snap_slot: dict[tuple, int]):
    """image rows (id, name, seq, category, attributes) as (id, name, slot, seq, category,
    attributes): the slot the snapshot gave the image, else the lowest one nobody holds."""
    taken = {snap_slot[r[:2]] for r in rows if r[:2] in snap_slot}
    free = (s for s in itertools.count() if s not in taken)
    return [(r[0], r[1], snap_slot[r[:2]] if r[:2] in snap_slot else next(free), *r[2:]) for r in rows]


def _load_snapshot(store, path: str, params: dict, storage: str, threads, rows, seqs_db: np.ndarray,
                   head: int):
    """(kernel, graph, seq, {(id, image name): slot}) of the newest snapshot that agrees with the
    store; (empty kernel, None, 0, {}) if there is none."""
    root = os.path.join(path, "snapshots")
    fresh = lambda: ExactIndex(params["dim"], storage, threads=threads)  # noqa: E731
    seqs = snap.list_snapshots(root)
    if not seqs:
        if len(rows):
            log.warning("catalogue %s: no snapshot; rebuilding the indexes from %s (%s)", path, store.kind, store.name)
        return fresh(), None, 0, {}
    for s in seqs:
        exact = fresh()
        try:
            if s > head:
                raise ValueError(f"newer than the store (seq {head})")
            graph, snap_seq, snap_keys = snap.load(root, s, params, threads, exact)
            snap_slot = {key: slot for slot, key in enumerate(snap_keys) if key is not None}
            for r, in_db in zip(rows, seqs_db.tolist()):
                # images unchanged since the snapshot must be in it as they are
                if in_db <= s and (r[:2] not in snap_slot or snap_seq[snap_slot[r[:2]]] != in_db):
                    raise ValueError("disagrees with the store")
        except (ValueError, OSError, RuntimeError) as e:
            log.warning("catalogue %s: snapshot %d unusable (%s); trying an older one", path, s, e)
            continue
        return exact, graph, s, snap_slot
    log.warning("catalogue %s: no usable snapshot; rebuilding the indexes from %s (%s)", path, store.kind, store.name)
    return fresh(), None, 0, {}


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
