"""API keys: who may call what. The one reader and writer of the key file.

A key is `sk_<id>_<secret>`: the id is public (it names the caller in logs and the audit trail),
the secret is 32 random bytes. The file (`keys.json` in the catalogue folder unless configured,
mode 0600) keeps per key its id, role, creation time, a random salt and scrypt(secret) only, so a
copy of the file gives no usable key. Verifying scrypt costs milliseconds, so a verified key is
remembered in memory by its SHA-256 for the process's life (bounded; dropped when the file
changes, which is how a revoke takes effect on a running server: the file is looked at at most
every `RECHECK_S` seconds, so a revoke bites within that).

Roles are ordered: `read` (Search, SearchStream, GetProduct, Embed, Stats) < `write` (+ Upsert,
UpsertStream, Delete) < `admin` (+ catalogue details in Stats and whatever administration the
API grows); each includes the ones below it.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import secrets
import threading
import time
from collections import OrderedDict

from ..errors import InvalidArgument, NotFound

ROLES = ("read", "write", "admin")
FILE = "keys.json"
_SCRYPT = dict(n=2 ** 14, r=8, p=1, dklen=32)
RECHECK_S = 0.1


def _hash(secret: str, salt: bytes) -> bytes:
    return hashlib.scrypt(secret.encode(), salt=salt, **_SCRYPT)


def allows(role: str, needed: str) -> bool:
    return ROLES.index(role) >= ROLES.index(needed)


class KeyStore:
    def __init__(self, path: str):
        self.path = path
        self._lock = threading.Lock()
        self._mtime = None
        self._checked = -1.0
        self._keys: dict[str, dict] = {}
        self._verified: OrderedDict[bytes, tuple[str, str]] = OrderedDict()  # sha256(token) -> (id, role)
        self._reload()

    # --- the file ------------------------------------------------------------------
    def _reload(self, force: bool = True) -> None:
        now = time.monotonic()
        if not force and now - self._checked < RECHECK_S:
            return
        self._checked = now
        try:
            mtime = os.stat(self.path).st_mtime_ns
        except FileNotFoundError:
            mtime = None
        if mtime == self._mtime:
            return
        keys = {}
        if mtime is not None:
            with open(self.path) as f:
                keys = {k["id"]: k for k in json.load(f)["keys"]}
        self._keys, self._mtime = keys, mtime
        self._verified.clear()

    def _write(self, keys: dict) -> None:
        tmp = self.path + ".tmp"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump({"keys": list(keys.values())}, f, indent=1)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.path)

    # --- management (skulens keys add/list/revoke) ------------------------------------
    def add(self, role: str, note: str = "") -> tuple[str, str]:
        """A new key of `role`: (its id, the key itself, shown once and never stored)."""
        if role not in ROLES:
            raise InvalidArgument(f"role {role!r}: one of {', '.join(ROLES)}")
        with self._lock:
            self._reload()
            kid = secrets.token_hex(4)
            while kid in self._keys:
                kid = secrets.token_hex(4)
            secret = secrets.token_urlsafe(32)
            salt = secrets.token_bytes(16)
            keys = dict(self._keys)
            keys[kid] = {"id": kid, "role": role, "note": note, "created": time.time(), "salt": salt.hex(),
                         "scrypt": _hash(secret, salt).hex()}
            self._write(keys)
            self._reload()
        return kid, f"sk_{kid}_{secret}"

    def list(self) -> list[dict]:
        with self._lock:
            self._reload()
            return [{k: v for k, v in e.items() if k in ("id", "role", "note", "created")} for e in self._keys.values()]

    def revoke(self, kid: str) -> None:
        with self._lock:
            self._reload()
            if kid not in self._keys:
                raise NotFound(f"no key with id {kid!r}")
            keys = dict(self._keys)
            del keys[kid]
            self._write(keys)
            self._reload()

    def __len__(self) -> int:
        with self._lock:
            self._reload(force=False)
            return len(self._keys)

    # --- checking a caller ---------------------------------------------------------
    def identify(self, token: str) -> tuple[str, str] | None:
        """(key id, role) of a valid key, or None."""
        digest = hashlib.sha256(token.encode()).digest()
        with self._lock:
            self._reload(force=False)
            hit = self._verified.get(digest)
            if hit is not None:
                return hit
            parts = token.split("_", 2)
            if len(parts) != 3 or parts[0] != "sk" or parts[1] not in self._keys:
                return None
            entry = self._keys[parts[1]]
        if not hmac.compare_digest(_hash(parts[2], bytes.fromhex(entry["salt"])), bytes.fromhex(entry["scrypt"])):
            return None
        with self._lock:
            self._verified[digest] = (entry["id"], entry["role"])
            while len(self._verified) > 10_000:
                self._verified.popitem(last=False)
        return entry["id"], entry["role"]
