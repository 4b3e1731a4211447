"""The follower: a replica's thread that tails the store and applies what other processes
committed, so a write made through any replica becomes searchable on every one.

It sleeps in the store's `wait_for_change` (SQLite: PRAGMA data_version, polled every few ms;
PostgreSQL: LISTEN for the NOTIFY every commit sends, with a timeout as a safety net), then
reads the changes after memory's `applied` seq in one consistent read and applies them under
the writer's mutex, in seq order with this process's own writes. Lag is what it reports: how
many seqs behind the newest it has seen, and for how long it has been behind (or cut off from
the store).
"""

from __future__ import annotations

import logging
import threading
import time

log = logging.getLogger("skulens.catalog")


class Follower:
    def __init__(self, store, writer, path: str, is_closed, on_applied, wait_s: float = 0.5):
        self.store, self.writer, self.path = store, writer, path
        self._is_closed, self._on_applied, self.wait_s = is_closed, on_applied, wait_s
        self.head = writer.mem.applied      # the newest seq seen in the store
        self.error: str | None = None       # why the store could not be read, while it cannot
        self._since: float | None = None    # when it last fell behind or lost the store
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="skulens-follower", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.store.wait_for_change(self.wait_s)
            except Exception:  # noqa: BLE001 - the next round retries
                log.exception("catalogue %s: waiting for the store failed", self.path)
                self._stop.wait(0.5)
            if not self._stop.is_set():
                self.catch_up()

    def catch_up(self) -> None:
        """Apply everything committed so far (also called by a search that waits for a seq)."""
        w = self.writer
        try:
            self.head = max(self.head, self.store.head())
            if self.head > w.mem.applied:
                self._since = self._since or time.monotonic()
                with w.mutex:
                    if self._is_closed() or w.failed is not None:
                        return
                    if self.head > w.mem.applied:
                        n = 0

                        def apply():
                            nonlocal n
                            n = w.apply(self.store.changes(w.mem.applied))
                        w.guard(apply)
                        self._on_applied(n)
            self.head = max(self.head, w.mem.applied)
            if self.error is not None:
                log.warning("catalogue %s: the store is back", self.path)
            self.error = None
            if w.mem.applied >= self.head:
                self._since = None
        except Exception as e:  # noqa: BLE001 - reported as lag and in Stats; retried
            if self.error is None:
                log.warning("catalogue %s: cannot follow the store: %s", self.path, e)
            self.error = str(e)
            self._since = self._since or time.monotonic()
            self._stop.wait(0.2)

    def lag(self) -> dict:
        behind = max(0, self.head - self.writer.mem.applied)
        since = self._since
        return {"seq": behind, "s": 0.0 if since is None else round(time.monotonic() - since, 3),
                "head": self.head, "error": self.error}

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()
