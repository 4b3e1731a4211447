"""Per-caller limits: concurrent calls and request rate, per API key (per peer address when
auth is off). Past them a call is RESOURCE_EXHAUSTED at once, with a retry hint (message and
trailing metadata `retry-after-ms`), instead of queueing: a flooding client then slows only itself.

A token bucket per caller: `rate` calls a second on average, bursts of up to `burst`. Streams
count as one call each for as long as they are open.
"""

from __future__ import annotations

import contextlib
import threading
import time

import grpc

from .auth import caller
from .wire import around


class Limits:
    def __init__(self, rate: float = 0.0, burst: int = 0, concurrency: int = 0):
        self.rate, self.burst, self.concurrency = float(rate), int(burst or max(1, rate)), int(concurrency)
        self._lock = threading.Lock()
        self._buckets: dict[str, list[float]] = {}   # caller -> [tokens, last refill time]
        self._open: dict[str, int] = {}

    @property
    def active(self) -> bool:
        return self.rate > 0 or self.concurrency > 0

    def _who(self, context) -> str:
        kid = caller()[0]
        if kid is not None:
            return f"key:{kid}"
        peer = context.peer() or "?"                  # ipv4:127.0.0.1:50123 -> ipv4:127.0.0.1
        return peer.rsplit(":", 1)[0]

    def admit(self, context) -> str:
        """Take a slot for this call or abort RESOURCE_EXHAUSTED; returns the caller to release."""
        who = self._who(context)
        wait_ms = 0
        with self._lock:
            if self.concurrency and self._open.get(who, 0) >= self.concurrency:
                wait_ms = 50
                why = f"{self.concurrency} calls of this caller are in flight"
            elif self.rate:
                now = time.monotonic()
                tokens, last = self._buckets.get(who, (float(self.burst), now))
                tokens = min(float(self.burst), tokens + (now - last) * self.rate)
                if tokens < 1.0:
                    wait_ms = max(1, int((1.0 - tokens) / self.rate * 1000))
                    why = f"over {self.rate:g} calls a second"
                    self._buckets[who] = [tokens, now]
                else:
                    self._buckets[who] = [tokens - 1.0, now]
            if not wait_ms:
                self._open[who] = self._open.get(who, 0) + 1
                if len(self._buckets) > 100_000:  # bounded: forget idle callers
                    self._buckets.clear()
                return who
        context.set_trailing_metadata((("retry-after-ms", str(wait_ms)),))
        context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, f"{why}; retry in {wait_ms} ms")

    def release(self, who: str) -> None:
        with self._lock:
            n = self._open.get(who, 1) - 1
            if n:
                self._open[who] = n
            else:
                self._open.pop(who, None)

    @contextlib.contextmanager
    def slot(self, context):
        who = self.admit(context)
        try:
            yield
        finally:
            self.release(who)

    def limited(self, fn, server_stream: bool):
        return around(fn, server_stream, self.slot)
