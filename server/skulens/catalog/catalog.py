"""The product catalogue: a store of record (SQLite or PostgreSQL), exact kernel + HNSW in
memory, filters.

A facade over its parts, each in its own module:

- the store (`store.py`: `store_sqlite.py`, `store_pg.py`) holds the truth; by default a
  SQLite file in the catalogue folder, this process's alone. Given `store=`, it is shared:
  several processes (replicas) serve it, each with its own memory and snapshots in its own
  folder, and `follower.py` applies what the others commit;
- writes (`writer.py`): check -> one store transaction (the ack point) ->
  apply to memory under the write side of a reader-writer lock; a write
  returns only after both, so the next search sees it;
- the graph (`indexer.py`) catches up in the background; until it has, the
  products it lacks are scanned exactly;
- searches (`search.py`): filter -> bitset of slots -> exact scan or graph walk;
- memory (`state.py`, `slots.py`) is rebuilt at start-up from the newest
  snapshot plus replay (`checkpoint.py` writes the snapshots, `snapshot.py`
  owns their files).
"""

from __future__ import annotations

import fcntl
import numbers
import os
import shutil
import time
from typing import Iterable

from ..affinity import usable
from ..errors import InvalidArgument, SkulensError, Unavailable
from ..limits import STORAGES
from .checkpoint import Checkpointer
from .follower import Follower
from .indexer import Indexer
from .product import Hit, Product, check_id, check_image_id, check_images, coerce
from .search import EXACT_BELOW, EXACT_FILTERED_BELOW, Searcher
from .state import load
from .store import Partition, describe, open_store
from .writer import Write, Writer


class Catalog:
    """A durable catalogue of products searchable by cosine similarity."""

    # --- opening -----------------------------------------------------------------
    @classmethod
    def open(cls, path: str, dim: int, *, storage: str = "fp32", M: int = 16, ef_construction: int = 100,
             ef: int = 64, threads: int | None = None, exact_below: int = EXACT_BELOW,
             exact_filtered_below: int = EXACT_FILTERED_BELOW, snapshot_every: int = 100_000,
             keep_snapshots: int = 2, max_unindexed: int = 100_000, text_dim: int | None = None,
             progress: bool = False, on_commit=None, store: str | None = None,
             shard: str | None = None) -> "Catalog":
        """Open (or create) the catalogue in folder `path` for `dim`-d vectors.

        Returns as soon as the exact kernel is loaded: searches are correct at
        once, and products the graph does not hold yet (after a rebuild, or a
        burst of upserts) are scanned exactly until the background indexer has
        added them (`wait_indexed()` waits for it). text_dim: title embeddings of
        another model than the images', searched with search(field="text"). on_commit(seconds) is
        told how long each durable commit took (metrics).

        store: a shared store of record (a PostgreSQL URL, or a SQLite file other processes
        open too); the folder then holds this replica's snapshots only. shard "i/n": hold only
        the products whose hash falls in partition i of n (writes of others are stored, not held)."""
        if isinstance(dim, bool) or not isinstance(dim, numbers.Integral) or not 0 < dim <= 65536:
            raise InvalidArgument(f"dim must be an integer in 1..65536, got {dim!r}")
        if threads is None:  # the CPUs this process may use (a pinned server, a container's cpuset)
            threads = usable()
        if storage not in STORAGES:
            raise InvalidArgument(f"storage must be one of {STORAGES}, got {storage!r}")
        self = cls.__new__(cls)
        self.path = os.fspath(path)
        self.dim = int(dim)
        self.storage = storage
        self.partition = Partition.parse(shard)
        self.params = {"dim": self.dim, "storage": storage, "M": int(M), "ef_construction": int(ef_construction),
                       "shard": str(self.partition)}
        self.shared = store is not None
        if self.partition.count > 1 and not self.shared:
            raise InvalidArgument("a shard needs a shared store (store=...) that holds the other partitions")
        self.ef = int(ef)
        self.max_unindexed = int(max_unindexed)
        self.text_dim = int(text_dim) if text_dim else None
        self._progress = progress
        self._closed = True
        # Product data is for this service alone: the folder is private to its user (its files,
        # SQLite's -wal/-shm included, inherit nothing readable through it).
        os.makedirs(self.path, mode=0o700, exist_ok=True)
        os.chmod(self.path, 0o700)
        self._lock_fd = os.open(os.path.join(self.path, "LOCK"), os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(self._lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(self._lock_fd)
            raise Unavailable(f"catalogue {self.path} is open in another process") from None
        try:
            t0 = time.perf_counter()
            spec = store if self.shared else os.path.join(self.path, "catalog.db")
            self.store_name = describe(spec)
            self._store = open_store(spec, self.dim, self.partition)
            self._mem, base, replayed = load(self._store, self.path, self.params, storage=storage, ef=self.ef,
                                             threads=threads, text_dim=self.text_dim, progress=progress)
            self.startup_s = time.perf_counter() - t0
        except BaseException:
            if hasattr(self, "_store"):
                self._store.close()
            os.close(self._lock_fd)
            raise
        self._closed = False
        self._writer = Writer(self._store, self._mem, self.path, self.partition, self._check_open,
                              lambda n: self._checkpoints.wrote(n), on_commit)
        self._search = Searcher(self._mem, self.dim, self.text_dim, self.ef, int(exact_below),
                                int(exact_filtered_below), self._check_open)
        self._indexer = Indexer(self._store, self._mem, self.path, lambda: self._checkpoints.indexed())
        self._checkpoints = Checkpointer(self._store, self._mem, self._writer, self._indexer, self.path,
                                         self.params, every=int(snapshot_every), keep=int(keep_snapshots),
                                         base_seq=base, changes=replayed, is_closed=lambda: self._closed)
        self._follower = None
        if self.shared:
            self._follower = Follower(self._store, self._writer, self.path, lambda: self._closed,
                                      lambda n: self._checkpoints.wrote(n))
            self._follower.start()
        self._indexer.start()
        return self

    # --- lifecycle ---------------------------------------------------------------
    def __enter__(self) -> "Catalog":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self, drain_timeout: float = 30.0, snapshot: bool = True) -> None:
        """Let the indexer finish (up to drain_timeout s), write a snapshot if
        anything changed (and `snapshot`), then release the folder. What the graph
        still lacks is re-added in the background after the next open."""
        if self._closed:
            return
        if self._follower is not None:
            self._follower.stop()
        self._indexer.stop(drain_timeout, self._progress)
        self._checkpoints.stop()
        with self._writer.mutex:
            if snapshot and self._checkpoints.pending():
                self._checkpoints.write_locked()
            self._mem.rw.acquire_write()
            self._closed = True
            self._mem.rw.release_write()
            self._store.close()
            os.close(self._lock_fd)

    def _check_open(self) -> None:
        if self._closed:
            raise Unavailable(f"catalogue {self.path} is closed")
        if self._writer.failed is not None:
            raise Unavailable(f"catalogue {self.path} must be reopened after an internal error: "
                              f"{self._writer.failed}")

    # --- writes ------------------------------------------------------------------
    def upsert(self, products: Iterable) -> int:
        """Insert or replace products in one durable transaction; returns its seq."""
        if isinstance(products, (Product, dict)):
            products = [products]
        items = [coerce(p, self.dim, self.text_dim) for p in products]
        if not items:
            return self._mem.applied
        ids = [p.id for p in items]
        if len(set(ids)) != len(ids):
            raise InvalidArgument("the same product id appears twice in one upsert")
        self._indexer.throttle(self.max_unindexed, lambda: self._closed)
        return self._writer.submit(Write("upsert", items))

    def add_images(self, id_: str, images: dict, thumbnails: dict | None = None) -> tuple[int, int]:
        """Add (or replace, by name) extra images of product id_, leaving its others as they are,
        in one durable transaction; returns (seq, how many images it holds now, its main one
        included). NOT_FOUND when there is no such product."""
        check_id(id_)
        if not images:
            raise InvalidArgument("no images to add")
        images, thumbs = check_images(images, thumbnails, self.dim, f"product {id_!r}")
        return self._edit(Write("images", [id_, images, thumbs, []]))

    def remove_images(self, id_: str, names: Iterable[str]) -> tuple[int, int, int]:
        """Remove extra images of product id_ by name (names it does not have are skipped, as
        delete skips ids); returns (seq, images it holds now, how many were removed). The main
        image stays: an upsert replaces it."""
        check_id(id_)
        names = list(dict.fromkeys([names] if isinstance(names, str) else names))
        if not names:
            raise InvalidArgument("no image ids to remove")
        for n in names:
            check_image_id(n, f"product {id_!r}")
        w = Write("images", [id_, {}, {}, names])
        seq, held = self._edit(w)
        return seq, held, w.changed

    def _edit(self, w: Write) -> tuple[int, int]:
        self._indexer.throttle(self.max_unindexed, lambda: self._closed)
        seq = self._writer.submit(w)
        return seq, len(w.present[0].images) + 1

    def delete(self, ids: Iterable[str]) -> int:
        """Delete products by id in one durable transaction; returns how many existed."""
        if isinstance(ids, str):
            ids = [ids]
        ids = list(dict.fromkeys(ids))
        for i in ids:
            check_id(i)
        return self._writer.submit(Write("delete", ids))

    def wait_indexed(self, timeout: float | None = None) -> bool:
        """Block until the graph holds every product (True) or timeout passes (False)."""
        return self._indexer.wait(timeout, lambda: self._closed, self._progress)

    # --- snapshots ---------------------------------------------------------------
    def checkpoint(self) -> int:
        """Write a snapshot of the indexes now; returns the seq it contains."""
        with self._writer.mutex:
            self._check_open()
            return self._checkpoints.write_locked()

    def snapshot(self, dest: str) -> str:
        """A consistent backup in folder dest (SQLite online backup + index snapshot)
        while searches go on; writes wait until it is done."""
        dest = os.fspath(dest)
        if os.path.exists(dest) and os.listdir(dest):
            raise InvalidArgument(f"backup folder {dest} is not empty")
        with self._writer.mutex:
            self._check_open()
            self._checkpoints.backup(dest)
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

    # --- consistency across replicas ---------------------------------------------
    @property
    def seq(self) -> int:
        """The store's seq this catalogue's memory holds every change up to."""
        return self._mem.applied

    def wait_seq(self, seq: int, timeout: float) -> bool:
        """Block until memory holds change `seq` (True) or timeout passes (False): read-your-
        writes across replicas. A seq the store has not reached yet is INVALID_ARGUMENT."""
        if self._mem.applied >= seq:
            return True
        self._check_open()
        if self._follower is None or seq > self._store.head():
            raise InvalidArgument(f"min_seq {seq} is ahead of the catalogue's newest change "
                                  f"({self._store.seq if self.shared else self._mem.applied})")
        self._follower.catch_up()
        cond, end = self._writer.applied, time.monotonic() + timeout
        with cond:
            while self._mem.applied < seq and not self._closed:
                left = end - time.monotonic()
                if left <= 0:
                    return False
                cond.wait(min(left, 0.05))
        return self._mem.applied >= seq

    def lag(self) -> dict:
        """How far this replica trails the store: {"seq", "s", "head", "error"}."""
        if self._follower is None:
            return {"seq": 0, "s": 0.0, "head": self._mem.applied, "error": None}
        return self._follower.lag()

    # --- reads -------------------------------------------------------------------
    def writing(self) -> bool:
        """Whether a write holds the indexes now or waits for them, so a search would wait too
        (the aio server then runs it off its event loop)."""
        return self._mem.rw.writing()

    def __len__(self) -> int:
        return len(self._mem.slots)

    def __contains__(self, id_) -> bool:
        return id_ in self._mem.slots.slot_of

    def get(self, id_: str) -> Product | None:
        check_id(id_)
        self._check_open()
        return self._store.get([id_]).get(id_)

    def get_many(self, ids: list[str]) -> dict[str, Product]:
        for i in ids:
            check_id(i)
        self._check_open()
        return self._store.get(list(ids))

    def thumbnail(self, id_: str, image: str = "") -> bytes | None:
        """The stored thumbnail of product id_'s image `image` ("": its main one)."""
        check_id(id_)
        if image:
            check_image_id(image)
        self._check_open()
        return self._store.thumbnail(id_, image)

    def search(self, vector, k: int = 10, filters=None, mode: str = "auto", ef: int | None = None,
               field: str = "image", images: int = 1) -> list[Hit]:
        """Products most similar to `vector`, best first (at most k; k whenever k match).

        A product with several images is one hit, scored by its best-matching image (named in
        Hit.image); images > 1 lists up to that many of its best images in Hit.images.
        field="text" searches the title embeddings (text_dim) exactly instead."""
        if field == "text":
            return self._search.search_text(vector, k, filters)
        if field != "image":
            raise InvalidArgument(f"field is 'image' or 'text', got {field!r}")
        return self._search.search(vector, k, filters, mode, ef, images)

    def _db_bytes(self) -> int | None:
        try:
            return self._store.size_bytes()
        except Unavailable:  # Stats answers from memory while the store is away
            return None

    def stats(self) -> dict:
        self._check_open()
        m, cp = self._mem, self._checkpoints
        return {
            "products": len(self), "images": m.slots.images, "dim": self.dim, "storage": self.storage,
            "slots": m.slots.high,
            "free_slots": len(m.slots.free), "seq": m.applied, "snapshot_seq": cp.seq,
            "store": self.store_name, "shard": str(self.partition), "lag": self.lag(),
            "changes_since_snapshot": cp.changes, "db_bytes": self._db_bytes(),
            "hnsw": {**self.params, "ef": self.ef, "capacity": m.graph.capacity,
                     "deleted": m.graph.deleted_count(), "unindexed": len(m.slots.unindexed)},
            "exact_below": self._search.exact_below, "exact_filtered_below": self._search.exact_filtered_below,
            "searches": self._search.counts(), "startup_s": round(self.startup_s, 3),
        }


__all__ = ["Catalog", "Product", "Hit", "SkulensError"]
