"""PostgreSQL, the catalogue of record for replicas on many machines: the one owner of the
`skulens` schema in that database (psycopg 3).

The same tables as SQLite's. The write lock is the row lock on `meta.seq` (SELECT ... FOR
UPDATE), held to COMMIT, so transactions commit in seq order; each one ends with NOTIFY
`skulens_changes`, which wakes every replica's follower. Commit is durable as PostgreSQL's
`synchronous_commit` makes it (on by default; with synchronous standbys, on them too).
Tailing reads run in REPEATABLE READ, so the head they read and the rows they read agree.
A lost connection is UNAVAILABLE to the caller; the next call reconnects.
"""

from __future__ import annotations

import functools
import threading
from contextlib import contextmanager

from ..errors import CorruptCatalog, InvalidArgument, Unavailable
from .store import (COLUMNS, VECTOR_COLUMNS, Changes, Partition, bucket, describe, image_thumbnail_rows,
                    image_vectors, product_of, stack, upsert_rows)

try:
    import psycopg
    from psycopg_pool import ConnectionPool
except ImportError:  # pragma: no cover - the message says what to install
    psycopg = None

FORMAT = "3"  # 2: no extra images per product (migrated on open)
CONNECT_S = 3
CHANNEL = "skulens_changes"
_LOCK_KEY = 0x736B756C656E73   # pg_advisory_lock: one replica creates the schema at a time

_SCHEMA = [
    "CREATE SCHEMA IF NOT EXISTS skulens",
    "CREATE TABLE IF NOT EXISTS skulens.meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
    """CREATE TABLE IF NOT EXISTS skulens.products (
        id TEXT PRIMARY KEY, bucket INTEGER NOT NULL, seq BIGINT NOT NULL, sku TEXT NOT NULL,
        title TEXT NOT NULL, category TEXT NOT NULL, attributes TEXT NOT NULL, vector BYTEA NOT NULL,
        text_vector BYTEA, created DOUBLE PRECISION NOT NULL, updated DOUBLE PRECISION NOT NULL,
        image_names TEXT, images BYTEA)""",
    # format 2 -> 3: the extra images (NULL: the main image only); no row is rewritten
    "ALTER TABLE skulens.products ADD COLUMN IF NOT EXISTS image_names TEXT",
    "ALTER TABLE skulens.products ADD COLUMN IF NOT EXISTS images BYTEA",
    """CREATE TABLE IF NOT EXISTS skulens.image_thumbnails (id TEXT NOT NULL, name TEXT NOT NULL,
        image BYTEA NOT NULL, PRIMARY KEY (id, name))""",
    "CREATE INDEX IF NOT EXISTS products_seq ON skulens.products (seq)",
    "CREATE TABLE IF NOT EXISTS skulens.thumbnails (id TEXT PRIMARY KEY, image BYTEA NOT NULL)",
    "CREATE TABLE IF NOT EXISTS skulens.tombstones (id TEXT PRIMARY KEY, bucket INTEGER NOT NULL, seq BIGINT NOT NULL)",
    "CREATE INDEX IF NOT EXISTS tombstones_seq ON skulens.tombstones (seq)",
]


def _unavailable(fn):
    """A database that cannot be reached is the caller's UNAVAILABLE, not INTERNAL."""
    @functools.wraps(fn)
    def wrapper(self, *a, **kw):
        try:
            return fn(self, *a, **kw)
        except psycopg.OperationalError as e:
            raise Unavailable(f"PostgreSQL {self.name}: {str(e).strip()}") from None
    return wrapper


class PgStore:
    def __init__(self, url: str, dim: int, partition: Partition = Partition()):
        if psycopg is None:
            raise Unavailable("a postgresql:// store needs psycopg 3: pip install 'psycopg[binary]' psycopg-pool")
        self.url, self.name, self.kind, self.partition = url, describe(url), "PostgreSQL", partition
        self._listen = None
        self._w = None
        self._wlock = threading.Lock()
        try:
            self._w = psycopg.connect(url, autocommit=True, connect_timeout=CONNECT_S)
            meta = self._setup(dim)
            # A database that is away fails a read in seconds (UNAVAILABLE), not at the pool's default 30 s.
            self._pool = ConnectionPool(url, min_size=1, max_size=8, timeout=CONNECT_S, name="skulens",
                                        kwargs={"autocommit": True, "connect_timeout": CONNECT_S}, open=True)
        except psycopg.OperationalError as e:
            if self._w is not None:
                self._w.close()
            raise Unavailable(f"PostgreSQL {self.name}: {str(e).strip()}") from None
        self.dim = int(meta["dim"])
        if self.dim != dim:
            self.close()
            raise InvalidArgument(f"catalogue at {self.name} holds {self.dim}-d vectors; opened with dim={dim}")
        self.seq = int(meta["seq"])

    def _setup(self, dim: int) -> dict:
        c = self._w
        c.execute("SELECT pg_advisory_lock(%s)", (_LOCK_KEY,))
        try:
            for stmt in _SCHEMA:
                c.execute(stmt)
            with c.transaction():
                c.execute("INSERT INTO skulens.meta VALUES ('format', %s), ('dim', %s), ('seq', '0') "
                          "ON CONFLICT (key) DO NOTHING", (FORMAT, str(dim)))
            meta = dict(c.execute("SELECT key, value FROM skulens.meta").fetchall())
            if meta.get("format") == "2":  # the statements above migrated it
                c.execute("UPDATE skulens.meta SET value = %s WHERE key = 'format'", (FORMAT,))
                meta["format"] = FORMAT
        finally:
            c.execute("SELECT pg_advisory_unlock(%s)", (_LOCK_KEY,))
        if meta.get("format") != FORMAT:
            raise CorruptCatalog(f"{self.name}: unknown catalogue format {meta.get('format')!r}")
        return meta

    def _writer(self):
        if self._w is None or self._w.closed or self._w.broken:
            self._w = psycopg.connect(self.url, autocommit=True, connect_timeout=CONNECT_S)
        return self._w

    # --- the write transaction -------------------------------------------------------------
    @_unavailable
    def begin(self) -> int:
        c = self._writer()
        c.execute("BEGIN")
        self.seq = int(c.execute("SELECT value FROM skulens.meta WHERE key = 'seq' FOR UPDATE").fetchone()[0])
        return self.seq

    @_unavailable
    def present(self, ids: list[str]) -> set[str]:
        return {r[0] for r in self._w.execute("SELECT id FROM skulens.products WHERE id = ANY(%s)", (ids,))}

    @_unavailable
    def write(self, ops: list[tuple], seq: int) -> None:
        import time
        c, now = self._w, time.time()
        with c.cursor() as cur:
            for kind, arg in ops:
                if kind == "delete":
                    cur.execute("DELETE FROM skulens.products WHERE id = ANY(%s)", (arg,))
                    cur.execute("DELETE FROM skulens.thumbnails WHERE id = ANY(%s)", (arg,))
                    cur.execute("DELETE FROM skulens.image_thumbnails WHERE id = ANY(%s)", (arg,))
                    cur.executemany("INSERT INTO skulens.tombstones VALUES (%s, %s, %s) ON CONFLICT (id) "
                                    "DO UPDATE SET seq = excluded.seq", [(i, bucket(i), seq) for i in arg])
                    continue
                cur.executemany(
                    f"INSERT INTO skulens.products (id, bucket, {COLUMNS.removeprefix('id, ')}) VALUES "
                    "(%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s) ON CONFLICT (id) DO UPDATE SET seq=excluded.seq, "
                    "sku=excluded.sku, title=excluded.title, category=excluded.category, "
                    "attributes=excluded.attributes, vector=excluded.vector, text_vector=excluded.text_vector, "
                    "updated=excluded.updated, image_names=excluded.image_names, images=excluded.images",
                    upsert_rows(arg, seq, now))
                cur.execute("DELETE FROM skulens.tombstones WHERE id = ANY(%s)", ([p.id for p in arg],))
                thumbs = [(p.id, p.thumbnail) for p in arg if p.thumbnail is not None]
                if thumbs:
                    cur.executemany("INSERT INTO skulens.thumbnails VALUES (%s, %s) ON CONFLICT (id) "
                                    "DO UPDATE SET image = excluded.image", thumbs)
                put, keep = image_thumbnail_rows(arg)
                cur.executemany("DELETE FROM skulens.image_thumbnails WHERE id = %s AND name <> ALL(%s)", keep)
                if put:
                    cur.executemany("INSERT INTO skulens.image_thumbnails VALUES (%s, %s, %s) ON CONFLICT (id, name) "
                                    "DO UPDATE SET image = excluded.image", put)
            cur.execute("UPDATE skulens.meta SET value = %s WHERE key = 'seq'", (str(seq),))
            cur.execute("SELECT pg_notify(%s, %s)", (CHANNEL, str(seq)))

    @_unavailable
    def commit(self, seq: int) -> None:
        self._w.execute("COMMIT")
        self.seq = seq

    def rollback(self) -> None:
        try:
            if self._w is not None and not self._w.closed:
                self._w.execute("ROLLBACK")
        except psycopg.Error:  # the connection is gone: so is its transaction
            pass

    # --- tailing -------------------------------------------------------------------------------
    @_unavailable
    def head(self) -> int:
        with self._pool.connection() as c:
            self.seq = int(c.execute("SELECT value FROM skulens.meta WHERE key = 'seq'").fetchone()[0])
        return self.seq

    def _changes(self, c, after: int) -> Changes:
        upto = int(c.execute("SELECT value FROM skulens.meta WHERE key = 'seq'").fetchone()[0])
        part = self.partition.sql(pg=True)
        rows = c.execute(f"SELECT {COLUMNS} FROM skulens.products WHERE seq > %s{part} ORDER BY seq",
                         (after,)).fetchall()
        gone = [r[0] for r in c.execute(f"SELECT id FROM skulens.tombstones WHERE seq > %s{part}", (after,))]
        self.seq = max(self.seq, upto)
        return Changes([product_of(r) for r in rows], [r[1] for r in rows], gone, upto)

    @_unavailable
    def changes(self, after: int, locked: bool = False) -> Changes:
        if locked:
            return self._changes(self._w, after)
        with self._pool.connection() as c:
            with c.transaction():
                c.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
                return self._changes(c, after)

    def wait_for_change(self, timeout: float) -> None:
        """Return on a NOTIFY from any replica's commit, or after timeout."""
        try:
            if self._listen is None or self._listen.closed:
                self._listen = psycopg.connect(self.url, autocommit=True, connect_timeout=CONNECT_S)
                self._listen.execute(f"LISTEN {CHANNEL}")
            for _ in self._listen.notifies(timeout=timeout, stop_after=1):
                pass
        except psycopg.OperationalError:
            if self._listen is not None:
                self._listen.close()
            self._listen = None
            threading.Event().wait(min(timeout, 0.5))  # the database is away: poll, do not spin

    # --- start-up --------------------------------------------------------------------------------
    @contextmanager
    def view(self):
        c = self._writer()
        with c.transaction():
            c.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
            yield int(c.execute("SELECT value FROM skulens.meta WHERE key = 'seq'").fetchone()[0])

    @_unavailable
    def scan_meta(self):
        return self._w.execute("SELECT id, seq, category, attributes, image_names FROM skulens.products "
                               f"WHERE true{self.partition.sql(pg=True)}").fetchall()

    def vectors(self, after: int | None = None, chunk: int = 8192):
        with self._w.cursor(name="skulens_vectors") as cur:  # server-side: rows arrive in chunks
            cur.execute(f"SELECT {VECTOR_COLUMNS} FROM skulens.products WHERE seq > %s"
                        f"{self.partition.sql(pg=True)}", (-1 if after is None else after,))
            while rows := cur.fetchmany(chunk):
                yield image_vectors(rows, self.dim)

    def text_vectors(self, dim: int, chunk: int = 8192):
        with self._w.cursor(name="skulens_text") as cur:
            cur.execute(f"SELECT id, text_vector FROM skulens.products WHERE length(text_vector) = %s"
                        f"{self.partition.sql(pg=True)}", (4 * dim,))
            while rows := cur.fetchmany(chunk):
                yield [r[0] for r in rows], stack(rows, dim)

    # --- reads -----------------------------------------------------------------------------------
    @_unavailable
    def get(self, ids: list[str]) -> dict:
        with self._pool.connection() as c:
            rows = c.execute(f"SELECT {COLUMNS} FROM skulens.products WHERE id = ANY(%s)", (list(ids),)).fetchall()
        return {r[0]: product_of(r) for r in rows}

    @_unavailable
    def get_locked(self, ids: list[str]) -> dict:
        rows = self._w.execute(f"SELECT {COLUMNS} FROM skulens.products WHERE id = ANY(%s)", (list(ids),)).fetchall()
        return {r[0]: product_of(r) for r in rows}

    @_unavailable
    def rows_of(self, ids: list[str]):
        with self._pool.connection() as c:
            got = c.execute(f"SELECT {VECTOR_COLUMNS}, seq FROM skulens.products WHERE id = ANY(%s)",
                            (list(ids),)).fetchall()
        pids, names, vecs = image_vectors(got, self.dim)
        seq = {r[0]: r[4] for r in got}
        return pids, names, [seq[i] for i in pids], vecs

    @_unavailable
    def thumbnail(self, id_: str, image: str = "") -> bytes | None:
        with self._pool.connection() as c:
            r = (c.execute("SELECT image FROM skulens.thumbnails WHERE id = %s", (id_,)) if not image else
                 c.execute("SELECT image FROM skulens.image_thumbnails WHERE id = %s AND name = %s", (id_, image))
                 ).fetchone()
        return None if r is None else bytes(r[0])

    @_unavailable
    def size_bytes(self) -> int:
        with self._pool.connection() as c:
            return int(c.execute("SELECT sum(pg_total_relation_size(c.oid)) FROM pg_class c JOIN pg_namespace n "
                                 "ON n.oid = c.relnamespace WHERE n.nspname = 'skulens' AND c.relkind = 'r'"
                                 ).fetchone()[0] or 0)

    def backup(self, dest_path: str) -> None:
        from ..errors import Unimplemented
        raise Unimplemented(f"{self.name} is backed up by PostgreSQL's own tools (pg_dump, pg_basebackup, "
                            "streaming replicas), not by skulens")

    def close(self) -> None:
        for c in (self._listen, self._w):
            if c is not None and not c.closed:
                c.close()
        pool = getattr(self, "_pool", None)
        if pool is not None:
            pool.close()
