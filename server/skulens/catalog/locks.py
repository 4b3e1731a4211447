"""A writer-preferring reader-writer lock.

Searches share it; index writes take it alone (hnswlib must not change while a
search walks the graph). Writers go first once waiting, so a stream of
searches cannot starve an upsert past its deadline.
"""

from __future__ import annotations

import threading


class RWLock:
    __slots__ = ("_lock", "_cond", "_readers", "_writer", "_waiting")

    def __init__(self):
        self._lock = threading.Lock()
        self._cond = threading.Condition(self._lock)
        self._readers = 0
        self._writer = False
        self._waiting = 0

    def acquire_read(self) -> None:
        # Searches are the hot path: the uncontended case is one plain lock round-trip.
        with self._lock:
            while self._writer or self._waiting:
                self._cond.wait()
            self._readers += 1

    def release_read(self) -> None:
        with self._lock:
            self._readers -= 1
            if self._readers == 0 and self._waiting:
                self._cond.notify_all()

    def acquire_write(self) -> None:
        with self._lock:
            self._waiting += 1
            while self._writer or self._readers:
                self._cond.wait()
            self._waiting -= 1
            self._writer = True

    def writing(self) -> bool:
        """A writer holds the lock or waits for it (read without the lock: a hint, not a promise)."""
        return self._writer or self._waiting > 0

    def release_write(self) -> None:
        with self._lock:
            self._writer = False
            self._cond.notify_all()
