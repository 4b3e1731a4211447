"""SQLite, the catalogue's source of truth: products, their vectors, and the
change sequence that snapshots of the in-memory indexes are measured against.

WAL journal with synchronous=FULL: a transaction is on disk when commit
returns, so a write is acknowledged only after that. Every write bumps `seq`
(in `meta`) in the same transaction and stamps the rows it touches with it, so
"what changed after a snapshot" is `WHERE seq > ?` plus the slots a snapshot
has that the table no longer does.

One connection writes (the catalogue serialises writers); readers get their
own connection per thread (WAL lets them read while the writer commits).
"""

from __future__ import annotations

import json
import os
import sqlite3
import threading
import time

import numpy as np

from ..errors import CorruptCatalog, InvalidArgument
from .product import Product

FORMAT = "1"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS products (
    id          TEXT PRIMARY KEY,
    slot        INTEGER NOT NULL UNIQUE,
    seq         INTEGER NOT NULL,
    sku         TEXT NOT NULL,
    title       TEXT NOT NULL,
    category    TEXT NOT NULL,
    attributes  TEXT NOT NULL,
    vector      BLOB NOT NULL,
    text_vector BLOB,
    created     REAL NOT NULL,
    updated     REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS products_seq ON products (seq);
-- Start-up reads every product's metadata: this covering index lets it skip
-- the vectors (1 KiB a row at d=256) instead of reading the whole table.
CREATE INDEX IF NOT EXISTS products_meta ON products (slot, seq, id, category, attributes);
CREATE TABLE IF NOT EXISTS thumbnails (id TEXT PRIMARY KEY, image BLOB NOT NULL);
"""

_COLUMNS = "id, slot, seq, sku, title, category, attributes, vector, text_vector, created, updated"


def _product(r) -> Product:
    return Product(r[0], r[3], r[4], r[5], json.loads(r[6]), np.frombuffer(r[7], dtype="<f4").copy(),
                   None if r[8] is None else np.frombuffer(r[8], dtype="<f4").copy(), r[9], r[10])


def _encode_attributes(attributes: dict[str, str]) -> str:
    return json.dumps(attributes, sort_keys=True, ensure_ascii=False, separators=(",", ":"))


class Store:
    """The products table and its change sequence."""

    def __init__(self, path: str, dim: int, create: bool = True):
        self.path = path
        self._local = threading.local()
        self._readers: list[sqlite3.Connection] = []
        self._readers_lock = threading.Lock()
        if not os.path.exists(path):  # SQLite gives the -wal and -shm files the database's mode
            os.close(os.open(path, os.O_RDWR | os.O_CREAT, 0o600))
        try:
            self._w = self._connect()
            self._w.executescript(_SCHEMA)
            meta = dict(self._w.execute("SELECT key, value FROM meta"))
            if not meta:
                with self._w:
                    self._w.executemany("INSERT INTO meta VALUES (?, ?)",
                                        [("format", FORMAT), ("dim", str(dim)), ("seq", "0")])
                meta = dict(self._w.execute("SELECT key, value FROM meta"))
        except sqlite3.DatabaseError as e:
            raise CorruptCatalog(f"catalogue database {path} is unreadable: {e}") from None
        if meta.get("format") != FORMAT:
            raise CorruptCatalog(f"{path}: unknown catalogue format {meta.get('format')!r}")
        self.dim = int(meta["dim"])
        if self.dim != dim:
            raise InvalidArgument(f"catalogue at {path} holds {self.dim}-d vectors; opened with dim={dim}")
        self.seq = int(meta["seq"])

    def _connect(self) -> sqlite3.Connection:
        c = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False, timeout=30)
        c.execute("PRAGMA journal_mode=WAL")
        c.execute("PRAGMA synchronous=FULL")
        c.execute("PRAGMA foreign_keys=ON")
        return c

    def _reader(self) -> sqlite3.Connection:
        c = getattr(self._local, "conn", None)
        if c is None:
            c = self._connect()
            c.execute("PRAGMA query_only=ON")
            self._local.conn = c
            with self._readers_lock:
                self._readers.append(c)
        return c

    # --- writes (caller serialises) ----------------------------------------
    def write(self, ops: list[tuple]) -> int:
        """One durable transaction over ops, in order; returns its seq.

        ops: ("upsert", [(Product, slot), ...]) or ("delete", [id, ...]).
        """
        seq = self.seq + 1
        now = time.time()
        c = self._w
        try:
            c.execute("BEGIN IMMEDIATE")
            for kind, arg in ops:
                if kind == "delete":
                    c.executemany("DELETE FROM products WHERE id = ?", [(i,) for i in arg])
                    c.executemany("DELETE FROM thumbnails WHERE id = ?", [(i,) for i in arg])
                    continue
                c.executemany(
                    f"INSERT INTO products ({_COLUMNS}) VALUES (?,?,?,?,?,?,?,?,?,?,?) "
                    "ON CONFLICT(id) DO UPDATE SET slot=excluded.slot, seq=excluded.seq, sku=excluded.sku, "
                    "title=excluded.title, category=excluded.category, attributes=excluded.attributes, "
                    "vector=excluded.vector, text_vector=excluded.text_vector, updated=excluded.updated",
                    [(p.id, slot, seq, p.sku, p.title, p.category, _encode_attributes(p.attributes),
                      p.vector.tobytes(), None if p.text_vector is None else p.text_vector.tobytes(), now, now)
                     for p, slot in arg])
                thumbs = [(p.id, p.thumbnail) for p, _ in arg if p.thumbnail is not None]
                if thumbs:
                    c.executemany("INSERT OR REPLACE INTO thumbnails VALUES (?, ?)", thumbs)
            c.execute("UPDATE meta SET value = ? WHERE key = 'seq'", (str(seq),))
            c.execute("COMMIT")
        except BaseException:
            if c.in_transaction:
                c.execute("ROLLBACK")
            raise
        self.seq = seq
        return seq

    # --- reads ---------------------------------------------------------------
    def get(self, ids: list[str]) -> dict[str, Product]:
        c = self._reader()
        out = {}
        for i in range(0, len(ids), 500):
            chunk = ids[i:i + 500]
            q = f"SELECT {_COLUMNS} FROM products WHERE id IN ({','.join('?' * len(chunk))})"
            for r in c.execute(q, chunk):
                out[r[0]] = _product(r)
        return out

    def thumbnail(self, id_: str) -> bytes | None:
        r = self._reader().execute("SELECT image FROM thumbnails WHERE id = ?", (id_,)).fetchone()
        return None if r is None else r[0]

    def scan_meta(self):
        """(id, slot, seq, category, attributes-json) of every product, for start-up."""
        try:
            return self._w.execute("SELECT id, slot, seq, category, attributes FROM products").fetchall()
        except sqlite3.DatabaseError as e:
            raise CorruptCatalog(f"catalogue database {self.path} is damaged: {e}") from None

    def vectors_of(self, slots: np.ndarray, chunk: int = 8192):
        """Yield (slots, vectors) of the rows in the given slots, in chunks (start-up)."""
        if len(slots) == 0:
            return
        want = np.zeros(int(slots.max()) + 1, dtype=bool)
        want[slots] = True
        try:
            # One sequential pass over the table beats many IN (...) lookups.
            cur = self._w.execute("SELECT slot, vector FROM products")
            while rows := cur.fetchmany(chunk):
                s = np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows))
                keep = (s < len(want)) & want[np.minimum(s, len(want) - 1)]
                if not keep.any():
                    continue
                idx = np.flatnonzero(keep).tolist()
                vecs = np.frombuffer(b"".join(rows[i][1] for i in idx), dtype="<f4").reshape(len(idx), self.dim)
                yield s[keep], vecs
        except sqlite3.DatabaseError as e:
            raise CorruptCatalog(f"catalogue database {self.path} is damaged: {e}") from None

    def vectors_after(self, seq: int, chunk: int = 8192):
        """Yield (slots, vectors) of rows changed after seq (the replay after a snapshot)."""
        try:
            cur = self._w.execute("SELECT slot, vector FROM products WHERE seq > ?", (seq,))
            while rows := cur.fetchmany(chunk):
                s = np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows))
                yield s, np.frombuffer(b"".join(r[1] for r in rows), dtype="<f4").reshape(len(rows), self.dim)
        except sqlite3.DatabaseError as e:
            raise CorruptCatalog(f"catalogue database {self.path} is damaged: {e}") from None

    def text_vectors(self, dim: int, chunk: int = 8192):
        """Yield (slots, vectors) of the stored title embeddings of `dim` values."""
        cur = self._w.execute("SELECT slot, text_vector FROM products WHERE length(text_vector) = ?", (4 * dim,))
        while rows := cur.fetchmany(chunk):
            s = np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows))
            yield s, np.frombuffer(b"".join(r[1] for r in rows), dtype="<f4").reshape(len(rows), dim)

    def rows_at(self, slots: np.ndarray):
        """(slots, seqs, vectors) of the rows now in these slots (missing ones are left out)."""
        c = self._reader()
        got = []
        for i in range(0, len(slots), 500):
            part = slots[i:i + 500].tolist()
            got += c.execute(f"SELECT slot, seq, vector FROM products WHERE slot IN ({','.join('?' * len(part))})",
                             part).fetchall()
        s = np.fromiter((r[0] for r in got), dtype=np.int64, count=len(got))
        q = np.fromiter((r[1] for r in got), dtype=np.int64, count=len(got))
        v = np.frombuffer(b"".join(r[2] for r in got), dtype="<f4").reshape(len(got), self.dim)
        return s, q, v

    def size_bytes(self) -> int:
        pc, ps = (self._w.execute(f"PRAGMA {p}").fetchone()[0] for p in ("page_count", "page_size"))
        return pc * ps

    def backup(self, dest_path: str) -> None:
        """A consistent copy through SQLite's online backup (readers carry on)."""
        dst = sqlite3.connect(dest_path)
        try:
            self._w.backup(dst)
            dst.execute("PRAGMA journal_mode=WAL")
        finally:
            dst.close()

    def close(self) -> None:
        with self._readers_lock:
            for c in self._readers:
                try:
                    c.close()
                except sqlite3.ProgrammingError:  # closed from another thread's view
                    pass
            self._readers.clear()
        self._w.close()

