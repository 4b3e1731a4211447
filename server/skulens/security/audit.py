"""The audit trail: an append-only JSON-lines file of every write and admin action.

Each record says who (the API key's id, or "-" when auth is off), what (the RPC and the product
ids it named, at most 50 of them plus their count), when, the outcome (a gRPC status name) and the
request id (the caller's `x-request-id` metadata, or one made here), and carries
`prev` (the hash of the line before) and `hash` = SHA-256 of `prev` + the record's canonical JSON.
Editing, removing or reordering a line breaks the chain at that line, which `skulens audit verify`
names.

Durability: a record is written and fsynced before the RPC answers (so, like an acknowledged
write, an acknowledged record survives kill -9). A process killed between a write's commit and
its record leaves the write without a record; the catalogue's change sequence (`seq` in every
write's record) shows the gap. Appends hold an exclusive lock on the file, so `skulens keys` and
several server processes can share one trail.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import secrets
import threading
import time

FILE = "audit.jsonl"
GENESIS = "0" * 64
IDS_KEPT = 50


def _digest(prev: str, record: dict) -> str:
    body = json.dumps(record, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256((prev + body).encode()).hexdigest()


def _last_hash(f) -> str:
    """The hash of the file's last complete line (GENESIS for an empty file)."""
    end = f.seek(0, os.SEEK_END)
    if end == 0:
        return GENESIS
    back = min(end, 1 << 16)
    f.seek(end - back)
    tail = f.read(back).rstrip(b"\n").rsplit(b"\n", 1)[-1]
    return json.loads(tail)["hash"]


class AuditLog:
    def __init__(self, path: str):
        self.path = path
        self._lock = threading.Lock()
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o600)
        self._f = os.fdopen(fd, "r+b", buffering=0)

    def record(self, action: str, outcome: str, who: str | None = None, what: dict | None = None,
               request_id: str | None = None) -> dict:
        rec = {"time": round(time.time(), 6), "who": who or "-", "action": action, "outcome": outcome,
               "request_id": request_id or secrets.token_hex(8), "what": what or {}}
        with self._lock:
            fcntl.flock(self._f.fileno(), fcntl.LOCK_EX)
            try:
                rec["prev"] = _last_hash(self._f)
                rec["hash"] = _digest(rec["prev"], {k: v for k, v in rec.items() if k != "hash"})
                self._f.write((json.dumps(rec, sort_keys=True, ensure_ascii=False) + "\n").encode())
                os.fsync(self._f.fileno())
            finally:
                fcntl.flock(self._f.fileno(), fcntl.LOCK_UN)
        return rec

    def close(self) -> None:
        self._f.close()


def verify(path: str) -> tuple[bool, int, str]:
    """(intact, lines checked or the first bad line's number (1-based), why)."""
    prev, n = GENESIS, 0
    with open(path, "rb") as f:
        for n, line in enumerate(f, 1):
            try:
                rec = json.loads(line)
                body = {k: v for k, v in rec.items() if k != "hash"}
            except (ValueError, AttributeError):
                return False, n, "not a JSON record"
            if rec.get("prev") != prev:
                return False, n, "does not follow the line before it (a line was removed, reordered or edited)"
            if _digest(prev, body) != rec.get("hash"):
                return False, n, "its hash does not match its content (the line was edited)"
            prev = rec["hash"]
    return True, n, "intact"


# Every write (auth's "write" RPCs: tests/test_access.py holds them equal); admin RPCs join as the API grows them.
AUDITED = ("Upsert", "UpsertStream", "Delete", "AddImages", "RemoveImages")


def _ids(request) -> list[str]:
    """The product ids a write names; an image edit names its product and the image ids."""
    if hasattr(request, "products"):
        return [p.id for p in request.products]
    if hasattr(request, "product_id"):
        images = [im.id for im in request.images] if hasattr(request, "images") else list(request.image_ids)
        return [request.product_id, *(f"{request.product_id}/{i}" for i in images)]
    return list(getattr(request, "ids", ()))


def audited(fn, action: str, log: AuditLog, client_stream: bool, who):
    """fn (a gRPC behaviour) with one audit record per call, written before the caller hears back.
    who() -> the caller's key id (security.auth.caller)."""
    def run(request, context):
        ids: list[str] = []
        if client_stream:
            def flow(requests):
                for r in requests:
                    ids.extend(_ids(r))
                    yield r
            arg = flow(request)
        else:
            ids.extend(_ids(request))
            arg = request
        outcome, seq = "OK", None
        try:
            response = fn(arg, context)
            seq = getattr(response, "seq", None) or None
            return response
        except BaseException:
            code = context.code()
            outcome = code.name if code is not None else "INTERNAL"
            raise
        finally:
            rid = dict(context.invocation_metadata() or ()).get("x-request-id")
            what = {"ids": ids[:IDS_KEPT], "count": len(ids)}
            if seq is not None:
                what["seq"] = seq
            log.record(action, outcome, who=who(), what=what, request_id=rid)
    return run
