"""Product filters: an AND of ORs over category and attributes, and the postings
that turn one into a bitset of slots for the search to apply inside its scan.

A filter comes in one of three spellings, all normalised to `Clauses`
(a tuple of clauses, each a tuple of (key, value) terms; a product passes when
every clause has at least one term that matches it):

- a dict: ``{"category": ["shoes", "boots"], "color": "red"}`` (each key is an
  OR over its values; keys are ANDed);
- a string in the syntax of Google's product search:
  ``"category=shoes OR category=boots AND color=red"`` (OR binds tighter);
- the clauses themselves: ``[[("category", "shoes"), ("color", "red")], ...]``.

The key ``category`` matches the product's category; any other key matches the
attribute of that name.
"""

from __future__ import annotations

import re

import numpy as np

from ..errors import InvalidArgument
from ..index import Allow
from ..limits import MAX_CLAUSES, MAX_TERMS, MAX_TEXT

Clauses = tuple[tuple[tuple[str, str], ...], ...]

_AND = re.compile(r"\s+AND\s+")
_OR = re.compile(r"\s+OR\s+")


def _term(key, value) -> tuple[str, str]:
    if not isinstance(key, str) or not isinstance(value, str):
        raise InvalidArgument(f"filter keys and values must be strings, got {key!r}={value!r}")
    key, value = key.strip(), value.strip()
    if not key or not value:
        raise InvalidArgument(f"filter term {key!r}={value!r} has an empty key or value")
    if len(key) > MAX_TEXT or len(value) > MAX_TEXT:
        raise InvalidArgument(f"filter term longer than {MAX_TEXT} characters")
    return key, value


def _unquote(v: str) -> str:
    v = v.strip()
    if len(v) >= 2 and v[0] == v[-1] and v[0] in "\"'":
        return v[1:-1]
    return v


def parse(filters) -> Clauses:
    """Normalise any accepted spelling to clauses; () means no filter."""
    if filters is None:
        return ()
    if isinstance(filters, str):
        text = filters.strip()
        if not text:
            return ()
        clauses = []
        for part in _AND.split(text):
            terms = []
            for t in _OR.split(part.strip()):
                if "=" not in t:
                    raise InvalidArgument(f"filter term {t.strip()!r} is not of the form key=value "
                                          f"(in {filters!r})")
                k, v = t.split("=", 1)
                terms.append(_term(k, _unquote(v)))
            clauses.append(terms)
    elif isinstance(filters, dict):
        clauses = []
        for k, v in filters.items():
            values = [v] if isinstance(v, str) else v
            if not isinstance(values, (list, tuple, set, frozenset)) or not values:
                raise InvalidArgument(f"filter {k!r} must map to a string or a non-empty list of strings")
            clauses.append([_term(k, x) for x in values])
    elif isinstance(filters, (list, tuple)):
        clauses = []
        for c in filters:
            if not isinstance(c, (list, tuple)) or not c:
                raise InvalidArgument(f"each filter clause must be a non-empty list of (key, value), got {c!r}")
            terms = []
            for t in c:
                if not isinstance(t, (list, tuple)) or len(t) != 2:
                    raise InvalidArgument(f"filter term must be a (key, value) pair, got {t!r}")
                terms.append(_term(*t))
            clauses.append(terms)
    else:
        raise InvalidArgument(f"filters must be a dict, a string or a list of clauses, "
                              f"got {type(filters).__name__}")
    if len(clauses) > MAX_CLAUSES or sum(map(len, clauses)) > MAX_TERMS:
        raise InvalidArgument(f"filter too large: at most {MAX_CLAUSES} clauses and {MAX_TERMS} terms")
    return tuple(tuple(dict.fromkeys(c)) for c in clauses)


def terms_of(category: str, attributes: dict[str, str]) -> tuple[tuple[str, str], ...]:
    """The (key, value) terms a product can be found by."""
    t = [("category", category)] if category else []
    t.extend(sorted(attributes.items()))
    return tuple(t)


class _Posting:
    """Slots holding one (key, value). Large ones also keep a packed bitset, so
    building a mask costs O(slots / 8) for them instead of O(members)."""

    __slots__ = ("members", "bits")

    def __init__(self):
        self.members: set[int] = set()
        self.bits: np.ndarray | None = None


class Postings:
    """Inverted index (key, value) -> slots, kept in step with the catalogue."""

    def __init__(self):
        self._p: dict[tuple[str, str], _Posting] = {}
        self.capacity = 0  # slots the bitsets cover

    def _dense_min(self) -> int:
        # Bitsets only where they pay: memory stays <= 128 bytes per member.
        return max(1024, self.capacity // 128)

    def grow(self, capacity: int) -> None:
        """Make room for slots < capacity (bitsets are extended lazily)."""
        self.capacity = max(self.capacity, capacity)

    def add(self, slot: int, terms) -> None:
        for t in terms:
            p = self._p.get(t)
            if p is None:
                p = self._p[t] = _Posting()
            p.members.add(slot)
            if p.bits is not None:
                if slot >= len(p.bits) * 8:
                    p.bits = _extend(p.bits, self.capacity)
                p.bits[slot >> 3] |= np.uint8(1 << (slot & 7))
            elif len(p.members) >= self._dense_min():
                p.bits = _pack(p.members, self.capacity)

    def remove(self, slot: int, terms) -> None:
        for t in terms:
            p = self._p.get(t)
            if p is None:
                continue
            p.members.discard(slot)
            if not p.members:
                del self._p[t]
            elif p.bits is not None:
                p.bits[slot >> 3] &= np.uint8(~(1 << (slot & 7)) & 0xFF)
                if len(p.members) < self._dense_min() // 2:
                    p.bits = None

    def bulk_load(self, slot_terms) -> None:
        """Add many (slot, terms) at once (start-up): members are grouped per term
        first and each bitset is packed in one numpy call, not bit by bit."""
        groups: dict[tuple[str, str], list[int]] = {}
        for slot, terms in slot_terms:
            for t in terms:
                g = groups.get(t)
                if g is None:
                    groups[t] = [slot]
                else:
                    g.append(slot)
        dense = self._dense_min()
        for t, slots in groups.items():
            p = self._p.get(t)
            if p is None:
                p = self._p[t] = _Posting()
            p.members.update(slots)
            if p.bits is not None or len(p.members) >= dense:
                p.bits = _pack(p.members, self.capacity)

    def mask(self, clauses: Clauses, slots: int) -> Allow:
        """Slots < `slots` that pass every clause, as a packed bitset."""
        nbytes = 8 * ((slots + 63) // 64)  # whole words: the kernels read it as it is
        out = None
        for clause in clauses:
            acc = np.zeros(nbytes, dtype=np.uint8)
            sparse: list[int] = []
            for t in clause:
                p = self._p.get(t)
                if p is None:
                    continue
                if p.bits is not None:
                    b = p.bits[:nbytes]
                    acc[: len(b)] |= b
                else:
                    sparse.extend(p.members)
            if sparse:
                b = _pack(sparse, slots)[:nbytes]
                acc[: len(b)] |= b
            out = acc if out is None else (out & acc)
            if not out.any():
                break
        return Allow(out if out is not None else np.zeros(nbytes, dtype=np.uint8), slots)


def _pack(slots, capacity: int) -> np.ndarray:
    idx = np.fromiter(slots, dtype=np.int64)
    n = max(capacity, int(idx.max()) + 1 if len(idx) else 0)
    m = np.zeros(n, dtype=bool)
    m[idx] = True
    return np.packbits(m, bitorder="little")


def _extend(bits: np.ndarray, capacity: int) -> np.ndarray:
    out = np.zeros(max((capacity + 7) // 8, 2 * len(bits)), dtype=np.uint8)
    out[: len(bits)] = bits
    return out
