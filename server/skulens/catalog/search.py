"""Search routing: filter -> bitset of slots -> exact scan or graph walk -> hits.

The exact kernel answers small catalogues, selective filters and mode="exact";
otherwise the HNSW walk does, its top k re-scored by the kernel in the same
call in mode="auto" (so both routes return the same scores), with the slots
the graph lacks yet (the indexer's backlog) scanned exactly beside it. A walk
that a filter cut short falls back to the exact scan.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from itertools import islice, repeat

import numpy as np

from ..errors import InvalidArgument
from ..index import Allow, ShortResult
from ..limits import MAX_IMAGES, MODES
from . import filters as flt
from .product import Hit, count, ef as check_ef, top_k, unit
from .state import Memory

# Measured by `python bench/catalog_bench.py --calibrate` (docs/catalog.md, d=256):
# an exact scan of up to ~2,000 rows costs less than HNSW at recall 0.98, and it
# is exact; a filtered graph walk visits about ef / (matching fraction) nodes, so
# scanning the matches exactly is faster up to ~10,000 of them.
EXACT_BELOW = 2_000
EXACT_FILTERED_BELOW = 10_000

COUNTS = ("exact", "ann", "auto_exact", "auto_ann", "ann_fallback")
_ROUTE_KEYS = {("exact", "exact"): "exact", ("ann", "ann"): "ann", ("ann", "fallback"): "ann_fallback",
               ("auto", "exact"): "auto_exact", ("auto", "ann"): "auto_ann", ("auto", "fallback"): "ann_fallback"}
_hit = tuple.__new__  # builds a Hit without NamedTuple's Python-level __new__ (hot path)


def check_images(v) -> int:
    """How many of a hit's best images to list (1: only the best, in Hit.image)."""
    return count(v, "images per hit", MAX_IMAGES)


class Searcher:
    def __init__(self, mem: Memory, dim: int, text_dim: int | None, ef: int, exact_below: int,
                 exact_filtered_below: int, check_open):
        self.mem, self.dim, self.text_dim, self.ef = mem, dim, text_dim, ef
        self.exact_below, self.exact_filtered_below = exact_below, exact_filtered_below
        self._check_open = check_open
        self._masks: OrderedDict = OrderedDict()
        self._mask_lock = threading.Lock()
        self._tl = threading.local()
        self._counts_lock = threading.Lock()
        self._all_counts: list[dict] = []

    def search(self, vector, k, filters, mode, ef, images: int = 1) -> list[Hit]:
        q = unit(vector, self.dim, "query vector")
        k = top_k(k)
        if mode not in MODES:
            raise InvalidArgument(f"mode must be one of {MODES}, got {mode!r}")
        ef = check_ef(ef)
        images = check_images(images)
        clauses = flt.parse(filters) if filters else ()
        m = self.mem
        m.rw.acquire_read()
        try:
            self._check_open()
            slots = m.slots
            allow = None
            n = slots.images
            high = slots.high  # writers may allocate slots meanwhile (not yet live): read it once
            if clauses:
                allow = self.mask(clauses, high)
                n = allow.count()
            if n == 0:
                return []
            exact_max = self.exact_filtered_below if allow is not None else self.exact_below
            route = "exact" if mode == "exact" or (mode == "auto" and n <= exact_max) else "ann"
            if not slots.name_of:
                scores, ids, route = self._slots(q, k, allow, n, high, route, mode, ef)
                # C-level iteration only: this runs right after the graph walk has
                # evicted the interpreter's caches, where every bytecode costs.
                hits = list(map(_hit, repeat(Hit), zip(map(slots.id_of.__getitem__, ids.tolist()), scores.tolist(),
                                                       repeat(""), repeat(()))))
            else:
                hits, route = self._products(q, k, allow, n, high, route, mode, ef, images)
        finally:
            m.rw.release_read()
        counts = getattr(self._tl, "counts", None) or self._thread_counts()
        counts[_ROUTE_KEYS[mode, route]] += 1
        return hits

    def _slots(self, q, k, allow, n, high, route, mode, ef):
        """(scores, slots, route) of the k best images (under the read lock)."""
        m, slots = self.mem, self.mem.slots
        # Inputs are checked by the caller, once: the indexes are called on their trusted paths.
        if route == "ann":
            backlog = None
            n_graph = n
            if slots.unindexed:  # products the graph lacks yet are scanned exactly
                bits = slots.unindexed_bits[: 8 * ((high + 63) // 64)]
                backlog = Allow(bits, high) if allow is None else Allow(bits, high) & allow
                n_graph = n - backlog.count()
            try:
                scores, ids = m.graph.search_unit(q, k, allow, n_graph, ef=max(ef or self.ef, k),
                                                  rerank=m.exact if mode == "auto" else None)
            except ShortResult:
                route = "fallback"
            else:
                if backlog is not None:
                    bs, bl = m.exact.search_unit(q, k, backlog, n)
                    scores = np.concatenate([scores, bs])
                    ids = np.concatenate([ids, bl])
                    order = np.lexsort((ids, -scores))[:k]
                    scores, ids = scores[order], ids[order]
        if route != "ann":
            scores, ids = m.exact.search_unit(q, k, allow, n)
        return scores, ids, route

    def _products(self, q, k, allow, n, high, route, mode, ef, images):
        """One hit per product, scored by its best image (max fusion), k of them whenever k
        products match: the images searched grow until k distinct products are among them."""
        slots, exact = self.mem.slots, self.mem.exact
        want = min(n, k + min(len(slots.name_of), 2 * k))
        while True:
            scores, ids, route = self._slots(q, want, allow, n, high, route, mode, ef)
            best: dict[str, tuple] = {}
            for s, sc in zip(ids.tolist(), scores.tolist()):
                pid = slots.id_of[s]
                if pid not in best:
                    best[pid] = (sc, slots.name_of.get(s, ""))
            if len(best) >= k or len(ids) < want or want >= n:
                break
            want = min(n, 4 * want)
        chosen = list(islice(best.items(), k))
        if images == 1 and route != "ann":   # an exact scan met every image: each product's first is its best
            return [Hit(pid, sc, name) for pid, (sc, name) in chosen], route
        # Every image of the chosen products scored exactly, in one kernel call: a walk may have
        # met only some of a product's images, and images > 1 lists them.
        mine = [slots.images_of(pid) for pid, _ in chosen]
        scores = exact.rerank(q, [s for m in mine for s in m.values()]).tolist()
        hits, at = [], 0
        for (pid, _), m in zip(chosen, mine):
            ranked = sorted(zip(scores[at:at + len(m)], m), key=lambda t: -t[0])
            at += len(m)
            top = tuple((nm, s_) for s_, nm in ranked[:images]) if images > 1 else ()
            hits.append(Hit(pid, ranked[0][0], ranked[0][1], top))
        if route == "ann":
            hits.sort(key=lambda h: -h.score)
        return hits, route

    def search_text(self, vector, k, filters) -> list[Hit]:
        m = self.mem
        if m.text is None:
            raise InvalidArgument("this catalogue has no title embeddings (open it with text_dim)")
        q = unit(vector, self.text_dim, "text query vector")
        k = top_k(k)
        clauses = flt.parse(filters) if filters else ()
        m.rw.acquire_read()
        try:
            self._check_open()
            allow = self.mask(clauses, m.slots.high) if clauses else None
            scores, ids = m.text.search_unit(q, k, allow, len(m.slots))
            return [Hit(m.slots.id_of[s], float(sc)) for s, sc in zip(ids.tolist(), scores.tolist())]
        finally:
            m.rw.release_read()

    def mask(self, clauses, high: int) -> Allow:
        """The filter's bitset, cached until the next write: shops filter by the
        same few categories over and over, and at 1M products building a mask
        costs more than the cache lookup."""
        version = self.mem.version
        with self._mask_lock:
            hit = self._masks.get(clauses)
            if hit is not None and hit[0] == version:
                self._masks.move_to_end(clauses)
                return hit[1]
        bits = self.mem.postings.mask(clauses, high)
        with self._mask_lock:
            self._masks[clauses] = (version, bits)
            self._masks.move_to_end(clauses)
            while len(self._masks) > 16:
                self._masks.popitem(last=False)
        return bits

    def counts(self) -> dict:
        with self._counts_lock:
            return {k: sum(c[k] for c in self._all_counts) for k in COUNTS}

    def _thread_counts(self) -> dict:
        # Per-thread counters: no lock on the search path; counts() adds them up.
        c = dict.fromkeys(COUNTS, 0)
        self._tl.counts = c
        with self._counts_lock:
            self._all_counts.append(c)
        return c
