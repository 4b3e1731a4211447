"""SQLite, the embedded catalogue of record: the one owner of `catalog.db`'s schema.

WAL journal with synchronous=FULL: a transaction is on disk when commit returns, so a write is
acknowledged only after that. BEGIN IMMEDIATE is the store's write lock, across processes too
(`skulens serve --workers`); WAL lets readers go on meanwhile, and a read transaction sees one
consistent state (what `changes` and start-up need). One connection writes; readers get their
own connection per thread.
"""

from __future__ import annotations

import json
import os
import sqlite3
import threading
import time
from contextlib import contextmanager

from ..errors import CorruptCatalog, InvalidArgument
from .store import (COLUMNS, VECTOR_COLUMNS, Changes, Partition, bucket, image_thumbnail_rows, image_vectors,
                    product_of, stack, upsert_rows)

FORMAT = "3"  # 2: no extra images per product (migrated on open); 1: slots stored per product
# How often a follower asks whether another process committed (PRAGMA data_version): every 2 ms
# after a change, backing off to 20 ms while nothing changes (an idle worker then costs ~0.5% of a
# core, not 3.5%). A Search with min_seq does not wait for the poll: it reads the head itself.
POLL_S, POLL_IDLE_S = 0.002, 0.020

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS products (
    id          TEXT PRIMARY KEY,
    bucket      INTEGER NOT NULL,
    seq         INTEGER NOT NULL,
    sku         TEXT NOT NULL,
    title       TEXT NOT NULL,
    category    TEXT NOT NULL,
    attributes  TEXT NOT NULL,
    vector      BLOB NOT NULL,
    text_vector BLOB,
    created     REAL NOT NULL,
    updated     REAL NOT NULL,
    image_names TEXT,           -- the extra images' names, a JSON list (NULL: the main image only)
    images      BLOB            -- their float32 vectors end to end, in that order
);
CREATE INDEX IF NOT EXISTS products_seq ON products (seq);
-- Start-up reads every product's metadata: this covering index lets it skip
-- the vectors (1 KiB a row at d=256) instead of reading the whole table.
CREATE INDEX IF NOT EXISTS products_meta ON products (bucket, seq, id, category, attributes, image_names);
CREATE TABLE IF NOT EXISTS thumbnails (id TEXT PRIMARY KEY, image BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS image_thumbnails (id TEXT NOT NULL, name TEXT NOT NULL, image BLOB NOT NULL,
                                             PRIMARY KEY (id, name));
-- Deleted ids, so a replica tailing the store sees deletes (an upsert of the id removes its row).
CREATE TABLE IF NOT EXISTS tombstones (id TEXT PRIMARY KEY, bucket INTEGER NOT NULL, seq INTEGER NOT NULL);
CREATE INDEX IF NOT EXISTS tombstones_seq ON tombstones (seq);
"""



def _statements(script: str) -> list[str]:
    """The schema's statements (executescript would COMMIT the open transaction first)."""
    return [x for x in (part.strip() for part in script.split(";")) if x]


class SqliteStore:
    def __init__(self, path: str, dim: int, partition: Partition = Partition()):
        self.path, self.name, self.kind, self.partition = path, path, "SQLite", partition
        self._local = threading.local()
        self._readers: list[sqlite3.Connection] = []
        self._readers_lock = threading.Lock()
        self._watch: sqlite3.Connection | None = None
        if not os.path.exists(path):  # SQLite gives the -wal and -shm files the database's mode
            os.close(os.open(path, os.O_RDWR | os.O_CREAT, 0o600))
        try:
            self._w = self._connect()
            self._w.execute("BEGIN IMMEDIATE")  # one process creates or migrates; the others wait
            try:
                meta = self._setup(dim)
                self._w.execute("COMMIT")
            except BaseException:
                self._w.execute("ROLLBACK")
                raise
        except sqlite3.DatabaseError as e:
            raise CorruptCatalog(f"catalogue database {path} is unreadable: {e}") from None
        self.dim = int(meta["dim"])
        if self.dim != dim:
            raise InvalidArgument(f"catalogue at {path} holds {self.dim}-d vectors; opened with dim={dim}")
        self.seq = int(meta["seq"])   # the newest seq this process has seen committed

    def _setup(self, dim: int) -> dict:
        c = self._w
        c.execute("CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
        meta = dict(c.execute("SELECT key, value FROM meta"))
        if meta.get("format") == "1":
            self._migrate_from_1()
            meta = dict(c.execute("SELECT key, value FROM meta"))
        if meta.get("format") == "2":
            self._migrate_from_2()
            meta = dict(c.execute("SELECT key, value FROM meta"))
        for stmt in _statements(_SCHEMA):
            c.execute(stmt)
        if not meta:
            c.executemany("INSERT INTO meta VALUES (?, ?)", [("format", FORMAT), ("dim", str(dim)), ("seq", "0")])
            meta = dict(c.execute("SELECT key, value FROM meta"))
        if meta.get("format") != FORMAT:
            raise CorruptCatalog(f"{self.path}: unknown catalogue format {meta.get('format')!r}")
        return meta

    def _migrate_from_1(self) -> None:
        c = self._w
        c.create_function("skulens_bucket", 1, bucket, deterministic=True)
        c.execute("ALTER TABLE products RENAME TO products_v1")
        c.execute("DROP INDEX IF EXISTS products_seq")
        c.execute("DROP INDEX IF EXISTS products_meta")
        for stmt in _statements(_SCHEMA):  # format 1 kept each product's slot; slots are each replica's own now
            c.execute(stmt)
        c.execute(f"INSERT INTO products SELECT id, skulens_bucket(id), seq, sku, title, category, attributes, "
                  f"vector, text_vector, created, updated, NULL, NULL FROM products_v1")
        c.execute("DROP TABLE products_v1")
        c.execute("UPDATE meta SET value = ? WHERE key = 'format'", (FORMAT,))

    def _migrate_from_2(self) -> None:
        """Format 2 had one image per product: two NULL columns (no rewrite of the rows) and the
        start-up index rebuilt to cover the image names."""
        c = self._w
        c.execute("ALTER TABLE products ADD COLUMN image_names TEXT")
        c.execute("ALTER TABLE products ADD COLUMN images BLOB")
        c.execute("DROP INDEX IF EXISTS products_meta")
        c.execute("UPDATE meta SET value = ? WHERE key = 'format'", (FORMAT,))

    def _connect(self) -> sqlite3.Connection:
        c = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False, timeout=30)
        c.execute("PRAGMA journal_mode=WAL")
        c.execute("PRAGMA synchronous=FULL")
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

    def _damaged(self, e: Exception) -> CorruptCatalog:
        return CorruptCatalog(f"catalogue database {self.path} is damaged: {e}")

    # --- the write transaction (the catalogue's writer serialises its callers) ---------------
    def begin(self) -> int:
        """Take the store's write lock; returns the newest committed seq."""
        self._w.execute("BEGIN IMMEDIATE")
        self.seq = int(self._w.execute("SELECT value FROM meta WHERE key = 'seq'").fetchone()[0])
        return self.seq

    def present(self, ids: list[str]) -> set[str]:
        """Which of ids are stored (inside the write transaction)."""
        out = set()
        for i in range(0, len(ids), 500):
            part = ids[i:i + 500]
            out.update(r[0] for r in self._w.execute(
                f"SELECT id FROM products WHERE id IN ({','.join('?' * len(part))})", part))
        return out

    def write(self, ops: list[tuple], seq: int) -> None:
        """ops in order, stamped `seq`: ("upsert", [Product, ...]) or ("delete", [id, ...])."""
        c, now = self._w, time.time()
        for kind, arg in ops:
            if kind == "delete":
                c.executemany("DELETE FROM products WHERE id = ?", [(i,) for i in arg])
                c.executemany("DELETE FROM thumbnails WHERE id = ?", [(i,) for i in arg])
                c.executemany("DELETE FROM image_thumbnails WHERE id = ?", [(i,) for i in arg])
                c.executemany("INSERT OR REPLACE INTO tombstones VALUES (?, ?, ?)", [(i, bucket(i), seq) for i in arg])
                continue
            c.executemany(
                f"INSERT INTO products (id, bucket, {COLUMNS.removeprefix('id, ')}) VALUES "
                "(?,?,?,?,?,?,?,?,?,?,?,?,?) ON CONFLICT(id) DO UPDATE SET seq=excluded.seq, sku=excluded.sku, "
                "title=excluded.title, category=excluded.category, attributes=excluded.attributes, "
                "vector=excluded.vector, text_vector=excluded.text_vector, updated=excluded.updated, "
                "image_names=excluded.image_names, images=excluded.images", upsert_rows(arg, seq, now))
            c.executemany("DELETE FROM tombstones WHERE id = ?", [(p.id,) for p in arg])
            thumbs = [(p.id, p.thumbnail) for p in arg if p.thumbnail is not None]
            if thumbs:
                c.executemany("INSERT OR REPLACE INTO thumbnails VALUES (?, ?)", thumbs)
            put, keep = image_thumbnail_rows(arg)
            c.executemany("DELETE FROM image_thumbnails WHERE id = ? AND name NOT IN (SELECT value FROM json_each(?))",
                          [(i, json.dumps(names)) for i, names in keep])
            if put:
                c.executemany("INSERT OR REPLACE INTO image_thumbnails VALUES (?, ?, ?)", put)
        c.execute("UPDATE meta SET value = ? WHERE key = 'seq'", (str(seq),))

    def commit(self, seq: int) -> None:
        self._w.execute("COMMIT")
        self.seq = seq

    def rollback(self) -> None:
        if self._w.in_transaction:
            self._w.execute("ROLLBACK")

    # --- tailing -------------------------------------------------------------------------------
    def head(self) -> int:
        """The newest committed seq (another process may have moved it)."""
        self.seq = int(self._reader().execute("SELECT value FROM meta WHERE key = 'seq'").fetchone()[0])
        return self.seq

    def changes(self, after: int, locked: bool = False) -> Changes:
        """This partition's changes after seq `after`, up to the newest (inside the write
        transaction when locked, else in a read transaction of their own: one consistent state)."""
        c = self._w if locked else self._reader()
        if not locked:
            c.execute("BEGIN")
        try:
            upto = int(c.execute("SELECT value FROM meta WHERE key = 'seq'").fetchone()[0])
            part = self.partition.sql()
            rows = c.execute(f"SELECT {COLUMNS} FROM products WHERE seq > ?{part} ORDER BY seq", (after,)).fetchall()
            gone = [r[0] for r in c.execute(f"SELECT id FROM tombstones WHERE seq > ?{part}", (after,))]
        finally:
            if not locked:
                c.execute("COMMIT")
        self.seq = max(self.seq, upto)
        return Changes([product_of(r) for r in rows], [r[1] for r in rows], gone, upto)

    def wait_for_change(self, timeout: float) -> None:
        """Return when another connection has committed, or after timeout."""
        if self._watch is None:
            self._watch = self._connect()
            self._version = self._watch.execute("PRAGMA data_version").fetchone()[0]
            self._poll = POLL_S
        end = time.monotonic() + timeout
        while True:
            v = self._watch.execute("PRAGMA data_version").fetchone()[0]
            if v != self._version:
                self._version, self._poll = v, POLL_S
                return
            if time.monotonic() >= end:
                return
            time.sleep(self._poll)
            self._poll = min(POLL_IDLE_S, self._poll * 1.5)

    # --- start-up: one read transaction around them (`view`) ----------------------------------
    @contextmanager
    def view(self):
        """A consistent read of the store for start-up; yields the seq it shows."""
        try:
            self._w.execute("BEGIN")
            seq = int(self._w.execute("SELECT value FROM meta WHERE key = 'seq'").fetchone()[0])
        except sqlite3.DatabaseError as e:
            raise self._damaged(e) from None
        try:
            yield seq
        finally:
            try:
                self._w.execute("ROLLBACK")  # it only read
            except sqlite3.Error:  # a damaged file: the error raised inside is the one to see
                pass

    def scan_meta(self):
        """(id, seq, category, attributes-json, image-names-json) of this partition's products (start-up)."""
        try:
            return self._w.execute("SELECT id, seq, category, attributes, image_names FROM products "
                                   f"WHERE 1{self.partition.sql()}").fetchall()
        except sqlite3.DatabaseError as e:
            raise self._damaged(e) from None

    def vectors(self, after: int | None = None, chunk: int = 8192):
        """Yield (ids, image names, vectors) of every image of this partition's rows (those changed
        after seq `after`)."""
        q = f"SELECT {VECTOR_COLUMNS} FROM products WHERE seq > ?{self.partition.sql()}"
        try:
            cur = self._w.execute(q, (-1 if after is None else after,))
            while rows := cur.fetchmany(chunk):
                yield image_vectors(rows, self.dim)
        except sqlite3.DatabaseError as e:
            raise self._damaged(e) from None

    def text_vectors(self, dim: int, chunk: int = 8192):
        """Yield (ids, vectors) of the stored title embeddings of `dim` values."""
        cur = self._w.execute(f"SELECT id, text_vector FROM products WHERE length(text_vector) = ?"
                              f"{self.partition.sql()}", (4 * dim,))
        while rows := cur.fetchmany(chunk):
            yield [r[0] for r in rows], stack(rows, dim)

    # --- reads -----------------------------------------------------------------------------------
    def get(self, ids: list[str]) -> dict:
        c = self._reader()
        out = {}
        for i in range(0, len(ids), 500):
            chunk = ids[i:i + 500]
            for r in c.execute(f"SELECT {COLUMNS} FROM products WHERE id IN ({','.join('?' * len(chunk))})", chunk):
                out[r[0]] = product_of(r)
        return out

    def get_locked(self, ids: list[str]) -> dict:
        """get() inside the write transaction (an image edit reads the row it rewrites)."""
        return {r[0]: product_of(r) for r in self._w.execute(
            f"SELECT {COLUMNS} FROM products WHERE id IN ({','.join('?' * len(ids))})", ids)}

    def rows_of(self, ids: list[str]) -> tuple[list, list, list, object]:
        """(ids, image names, seqs, vectors) of every image of those of ids that are stored (the
        indexer's reads)."""
        c, got = self._reader(), []
        for i in range(0, len(ids), 500):
            part = ids[i:i + 500]
            got += c.execute(f"SELECT {VECTOR_COLUMNS}, seq FROM products WHERE id IN ({','.join('?' * len(part))})",
                             part).fetchall()
        pids, names, vecs = image_vectors(got, self.dim)
        seq = {r[0]: r[4] for r in got}
        return pids, names, [seq[i] for i in pids], vecs

    def thumbnail(self, id_: str, image: str = "") -> bytes | None:
        c = self._reader()
        r = (c.execute("SELECT image FROM thumbnails WHERE id = ?", (id_,)) if not image else
             c.execute("SELECT image FROM image_thumbnails WHERE id = ? AND name = ?", (id_, image))).fetchone()
        return None if r is None else r[0]

    def size_bytes(self) -> int:
        pc, ps = (self._reader().execute(f"PRAGMA {p}").fetchone()[0] for p in ("page_count", "page_size"))
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
        if self._watch is not None:
            self._watch.close()
        self._w.close()
