"""The catalogue of record behind the in-memory indexes: one interface, two engines.

- SQLite (`store_sqlite.py`), the embedded default: one file, WAL, synchronous=FULL; several
  processes on one machine may share it (`skulens serve --workers`).
- PostgreSQL (`store_pg.py`, psycopg 3): the catalogue of record for processes on many machines.

Both keep the same things: products keyed by id (with their vectors: the main image's, and the
named extra images' in the same row, so an image edit is one row version), thumbnails (the main
image's and each extra image's), tombstones of deleted ids, and one change sequence `seq`. A write transaction takes the store's write lock
first (SQLite's BEGIN IMMEDIATE; a row lock on PostgreSQL's `seq`), so writes commit one after
another in seq order: a reader that sees seq N has every change <= N, which is what lets a
replica tail the store with `changes(after, upto)` and know it missed nothing. Every row and
tombstone is stamped with the seq of the transaction that wrote it.

Slots (where a product sits in a replica's kernel and graph) are not stored: each replica hands
out its own, so a shard's replica holds memory for its partition only (`Partition`), and its
snapshots record which id each slot holds.
"""

from __future__ import annotations

import json
import os
import zlib
from typing import NamedTuple

import numpy as np

from ..errors import InvalidArgument
from .product import Product

COLUMNS = "id, seq, sku, title, category, attributes, vector, text_vector, created, updated, image_names, images"
# What the vector reads select: a product's main vector and its extra images (`image_vectors`).
VECTOR_COLUMNS = "id, vector, image_names, images"


def bucket(id_: str) -> int:
    """A product's hash bucket (stored with it): shards are `bucket % n == i`."""
    return zlib.crc32(id_.encode()) & 0x7FFFFFFF


class Partition(NamedTuple):
    """The products a replica holds: `bucket(id) % n == index` (0/1: all of them)."""
    index: int = 0
    count: int = 1

    @classmethod
    def parse(cls, text: str | None) -> "Partition":
        if not text:
            return cls()
        try:
            i, n = (int(x) for x in str(text).split("/"))
        except ValueError:
            raise InvalidArgument(f"shard must look like i/n (e.g. 0/2), got {text!r}") from None
        if not (n >= 1 and 0 <= i < n):
            raise InvalidArgument(f"shard {text!r}: need 0 <= i < n")
        return cls(i, n)

    def holds(self, id_: str) -> bool:
        return self.count == 1 or bucket(id_) % self.count == self.index

    def sql(self, pg: bool = False) -> str:
        """An AND-clause over `bucket` ('' when it holds everything). PostgreSQL's is mod(), as
        psycopg reads % as a placeholder. The numbers are ints parsed here, safe to inline."""
        if self.count == 1:
            return ""
        n, i = int(self.count), int(self.index)
        return f" AND mod(bucket, {n}) = {i}" if pg else f" AND bucket % {n} = {i}"

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"


class Changes(NamedTuple):
    """What a replica must apply to go from seq `after` to `upto`."""
    upserts: list      # Products, in seq order
    seqs: list         # seq of each upserted row
    deletes: list      # ids deleted (and not re-created) in (after, upto]
    upto: int


def encode_attributes(attributes: dict[str, str]) -> str:
    return json.dumps(attributes, sort_keys=True, ensure_ascii=False, separators=(",", ":"))


def encode_images(images: dict[str, np.ndarray]) -> tuple[str | None, bytes | None]:
    """A product's extra images as (names: a JSON list, vectors: their float32s end to end); NULLs for none."""
    if not images:
        return None, None
    return (json.dumps(list(images), ensure_ascii=False, separators=(",", ":")),
            b"".join(np.asarray(v, "<f4").tobytes() for v in images.values()))


def decode_images(names, blob, dim: int) -> dict[str, np.ndarray]:
    if names is None:
        return {}
    names = json.loads(names)
    vecs = np.frombuffer(bytes(blob), dtype="<f4").reshape(len(names), dim)
    return {n: vecs[i].copy() for i, n in enumerate(names)}


def product_of(r) -> Product:
    """A Product from a row of COLUMNS."""
    vector = np.frombuffer(r[6], dtype="<f4").copy()
    return Product(r[0], r[2], r[3], r[4], json.loads(r[5]), vector,
                   None if r[7] is None else np.frombuffer(r[7], dtype="<f4").copy(), r[8], r[9],
                   images=decode_images(r[10], r[11], len(vector)))


def upsert_rows(products: list[Product], seq: int, now: float) -> list[tuple]:
    """Rows of (id, bucket, seq, sku, title, category, attributes, vector, text_vector, created, updated,
    image_names, images)."""
    return [(p.id, bucket(p.id), seq, p.sku, p.title, p.category, encode_attributes(p.attributes),
             p.vector.tobytes(), None if p.text_vector is None else p.text_vector.tobytes(), now, now,
             *encode_images(p.images)) for p in products]


def image_thumbnail_rows(products: list[Product]) -> tuple[list[tuple], list[tuple]]:
    """(rows to write: (id, name, image), (id, [names]) whose other image thumbnails go): an
    upsert keeps the thumbnails of the images it still names and was not given a new one for."""
    put = [(p.id, n, t) for p in products for n, t in p.image_thumbnails.items()]
    keep = [(p.id, list(p.images)) for p in products]
    return put, keep


def stack(rows, dim: int) -> np.ndarray:
    """The float32 vectors in the second column of rows (id, vector, ...), as one (n, dim) array."""
    return np.frombuffer(b"".join(bytes(r[1]) for r in rows), dtype="<f4").reshape(len(rows), dim)


def image_vectors(rows, dim: int) -> tuple[list[str], list[str], np.ndarray]:
    """Every image vector of rows of VECTOR_COLUMNS (+ anything after): (product ids, image names
    with "" for the main one, (n, dim) float32s), each product's main image first."""
    ids, names, parts = [], [], []
    for r in rows:
        ids.append(r[0])
        names.append("")
        parts.append(bytes(r[1]))
        if r[2] is not None:
            extra = json.loads(r[2])
            ids += [r[0]] * len(extra)
            names += extra
            parts.append(bytes(r[3]))
    return ids, names, np.frombuffer(b"".join(parts), dtype="<f4").reshape(len(ids), dim)


def is_url(spec: str) -> bool:
    return spec.startswith(("postgresql://", "postgres://"))


def open_store(spec: str, dim: int, partition: Partition = Partition()):
    """The store named by spec: a PostgreSQL URL, `sqlite:///path`, or a path to a SQLite file."""
    if is_url(spec):
        from .store_pg import PgStore
        return PgStore(spec, dim, partition)
    from .store_sqlite import SqliteStore
    path = spec.removeprefix("sqlite://")
    return SqliteStore(os.path.abspath(path) if spec.startswith("sqlite://") else path, dim, partition)


def describe(spec: str) -> str:
    """The store's name for messages and Stats, without a password."""
    if is_url(spec):
        from urllib.parse import urlsplit
        u = urlsplit(spec)
        host = u.hostname or "localhost"
        return f"postgresql://{u.username + '@' if u.username else ''}{host}:{u.port or 5432}{u.path}"
    return spec
