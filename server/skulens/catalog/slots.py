"""Slots: the one record of which products are live and where they sit.

Each image of a product lives in a *slot*: its row in the kernel and its label in the
graph (the main image's slot is the product's; extra images get one each, sharing the
product's filter terms and seq, so a filter matches a product's images together). Deletes free slots, inserts reuse the lowest free one, so memory
follows the live count, not the history. Slots are stored in SQLite, so a
snapshot and the database agree on them.

Per slot this keeps the product id (and an extra image's name), its filter terms, the change seq of the
version it holds, and whether the graph lacks that version yet ("unindexed":
such slots are scanned exactly until the indexer adds them). The indexes keep
their own tombstones, but only as a consequence of what is recorded here.
"""

from __future__ import annotations

import heapq
import itertools
import json

import numpy as np

from .filters import terms_of


class Slots:
    def __init__(self, rows):
        """rows: (id, image, slot, seq, category, attributes-json) of every stored image ("": a
        product's main image)."""
        self.high = max((r[2] for r in rows), default=-1) + 1   # slots ever handed out
        cap = max(self.high, 1024)
        self.id_of: list[str | None] = [None] * self.high       # slot -> product id
        self.terms: list[tuple | None] = [None] * self.high     # slot -> filter terms
        self.seq = np.zeros(cap, dtype=np.int64)                 # slot -> seq of its version
        self.slot_of: dict[str, int] = {}                        # product id -> its main image's slot
        self.extra: dict[str, dict[str, int]] = {}               # product id -> {image name: slot}
        self.name_of: dict[int, str] = {}                        # an extra image's slot -> its name
        self.unindexed: set[int] = set()
        # The same set as a bitset, padded to whole words (the kernels' Allow format).
        self.unindexed_bits = np.zeros(8 * ((cap + 63) // 64), dtype=np.uint8)
        # Products share categories and attribute sets: decode each distinct
        # (category, attributes) once and share the terms tuple between them.
        memo: dict[tuple[str, str], tuple] = {}
        loads = json.loads
        for pid, name, slot, seq, category, attrs in rows:
            if name:
                self.extra.setdefault(pid, {})[name] = slot
                self.name_of[slot] = name
            else:
                self.slot_of[pid] = slot
            self.id_of[slot] = pid
            key = (category, attrs)
            t = memo.get(key)
            if t is None:
                t = terms_of(category, loads(attrs))
                if len(memo) < 200_000:
                    memo[key] = t
            self.terms[slot] = t
        if rows:
            self.seq[[r[2] for r in rows]] = [r[3] for r in rows]
        used = np.zeros(self.high, dtype=bool)
        used[[r[2] for r in rows]] = True
        self.free = np.flatnonzero(~used).tolist()  # sorted: already a heap

    def __len__(self) -> int:
        """Products (not images)."""
        return len(self.slot_of)

    @property
    def images(self) -> int:
        """Live slots: every product's main image and its extra ones."""
        return len(self.slot_of) + len(self.name_of)

    @property
    def capacity(self) -> int:
        return len(self.seq)

    def live(self) -> np.ndarray:
        """Slots holding an image (unsorted)."""
        return np.fromiter(itertools.chain(self.slot_of.values(), self.name_of), dtype=np.int64,
                           count=self.images)

    def slot_for(self, pid: str, name: str = "") -> int:
        """The slot of product pid's image `name` ("" its main one); -1 if it has none."""
        if not name:
            return self.slot_of.get(pid, -1)
        return self.extra.get(pid, {}).get(name, -1)

    def images_of(self, pid: str) -> dict[str, int]:
        """{image name: slot} of product pid, its main image ("") first; {} if it is not here."""
        s = self.slot_of.get(pid)
        return {} if s is None else {"": s, **self.extra.get(pid, {})}

    def keys(self) -> list:
        """Per slot up to `high`: its product id, [id, name] for an extra image, or None (snapshots)."""
        out = list(self.id_of[: self.high])
        for s, name in self.name_of.items():
            out[s] = [out[s], name]
        return out

    # --- allocation (the writer's) -------------------------------------------------
    def needs_growth(self) -> bool:
        """The next alloc() would pass the arrays' end: grow() first, under the write lock."""
        return not self.free and self.high >= len(self.seq)

    def grow(self) -> None:
        self.seq = np.concatenate([self.seq, np.zeros(len(self.seq), np.int64)])
        self.unindexed_bits = np.concatenate([self.unindexed_bits, np.zeros(len(self.unindexed_bits), np.uint8)])

    def alloc(self) -> int:
        if self.free:
            return heapq.heappop(self.free)
        s = self.high
        self.high += 1
        self.id_of.append(None)
        self.terms.append(None)
        return s

    def unalloc(self, slot: int) -> None:
        """Give back a slot that alloc() handed out for a write that failed."""
        heapq.heappush(self.free, slot)

    def assign(self, slot: int, pid: str, terms: tuple, seq: int, name: str = "") -> tuple | None:
        """Slot now holds product pid's image `name` of version seq; returns the terms it had."""
        old = self.terms[slot]
        self.terms[slot] = terms
        self.id_of[slot] = pid
        if name:
            self.extra.setdefault(pid, {})[name] = slot
            self.name_of[slot] = name
        else:
            self.slot_of[pid] = slot
        self.seq[slot] = seq
        return old

    def release(self, pid: str, name: str = "") -> tuple[int, tuple]:
        """Free the slot of product pid's image `name` ("": its main one, which must go last);
        returns (slot, its terms)."""
        if name:
            mine = self.extra[pid]
            s = mine.pop(name)
            del self.name_of[s]
            if not mine:
                del self.extra[pid]
        else:
            s = self.slot_of.pop(pid)
        terms = self.terms[s]
        self.id_of[s] = self.terms[s] = None
        self.seq[s] = 0
        self.mark_indexed([s])
        heapq.heappush(self.free, s)
        return s, terms

    # --- the graph's backlog ---------------------------------------------------------
    def mark_unindexed(self, slots) -> None:
        for x in np.asarray(slots).tolist():
            self.unindexed.add(x)
            self.unindexed_bits[x >> 3] |= 1 << (x & 7)

    def mark_indexed(self, slots) -> None:
        for x in np.asarray(slots).tolist():
            self.unindexed.discard(x)
            self.unindexed_bits[x >> 3] &= ~(1 << (x & 7)) & 0xFF
