"""Checkpoints: snapshots of the in-memory indexes written beside the database,
in the background every `every` changes and at close, so a restart replays
only what changed since (snapshot.py owns the files).

A checkpoint holds the writer mutex (writes wait) and the indexer's mutex (it
pauses); searches go on, since saving only reads the graph. Slots not in the
graph yet are recorded as such by its state array and re-added after a restart.
"""

from __future__ import annotations

import logging
import os
import threading

from . import snapshot as snap
from .indexer import Indexer
from .state import Memory
from .writer import Writer

log = logging.getLogger("skulens.catalog")


class Checkpointer:
    def __init__(self, store, mem: Memory, writer: Writer, indexer: Indexer, path: str, params: dict,
                 *, every: int, keep: int, base_seq: int, changes: int, is_closed):
        self.store, self.mem, self.writer, self.indexer = store, mem, writer, indexer
        self.path, self.params, self.every, self.keep = path, params, every, keep
        self.seq = base_seq          # seq of the newest snapshot
        self.changes = changes       # products written since it
        self._is_closed = is_closed
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._thread = threading.Thread(target=self._run, name="skulens-checkpoint", daemon=True)
        self._thread.start()

    def wrote(self, n: int) -> None:
        self.changes += n
        if self.changes >= self.every:
            self._wake.set()

    def indexed(self) -> None:
        if not self.mem.slots.unindexed and self.indexer.since_snapshot >= self.every:
            self._wake.set()

    def _run(self) -> None:
        while True:
            self._wake.wait()
            self._wake.clear()
            if self._stop.is_set():
                return
            try:
                with self.writer.mutex:
                    if not self._is_closed() and max(self.changes, self.indexer.since_snapshot) >= self.every:
                        self.write_locked()
            except Exception:  # a failed snapshot costs start-up time, never data
                log.exception("catalogue %s: background snapshot failed", self.path)

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        self._thread.join()

    def pending(self) -> bool:
        return bool(self.changes or self.indexer.since_snapshot)

    def write_locked(self) -> int:
        """Write a snapshot now (the caller holds the writer mutex); returns its seq."""
        seq = self.mem.applied
        if seq != self.seq or self.indexer.since_snapshot:
            with self.indexer.mutex:
                self._save(os.path.join(self.path, "snapshots"), seq, self.keep, replace=True)
                self.indexer.since_snapshot = 0
            self.seq = seq
        self.changes = 0
        return seq

    def backup(self, dest: str) -> None:
        """A consistent copy in folder dest (the caller holds the writer mutex)."""
        os.makedirs(dest, exist_ok=True)
        self.store.backup(os.path.join(dest, "catalog.db"))
        with self.indexer.mutex:
            self._save(os.path.join(dest, "snapshots"), self.mem.applied, 1)

    def _save(self, root: str, seq: int, keep: int, replace: bool = False) -> None:
        m = self.mem
        snap.write(root, seq, m.graph, m.exact, m.slots.seq[: m.slots.high], m.slots.keys(),
                   self.params, keep, replace=replace)
