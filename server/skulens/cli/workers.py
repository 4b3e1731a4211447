"""`skulens serve --workers N`: N server processes on one port, replicas of one store.

One Python process tops out on the GIL (a Search costs ~0.7-1 ms of server CPU, most of it
gRPC's Python layer), so every core gets its own process. They all listen on the same port
(SO_REUSEPORT: the kernel spreads new connections over them) and serve one store (by default
the SQLite file `catalog.db` in --data; or --store), each with its own memory and snapshots in
`<data>/workers/<i>/`, and a follower that applies what the others write. Keys and the audit
trail stay those of --data, shared (keys.json is re-read when it changes; audit appends hold a
file lock). This supervisor only starts, watches and stops them: a worker that dies is
restarted (its snapshot plus the store's changes bring it back), SIGTERM stops them all.
"""

from __future__ import annotations

import dataclasses
import os
import signal
import socket
import subprocess
import sys
import threading
import time

from ..affinity import usable


def _free_port(host: str) -> int:
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def _env(cfg, i: int, port: int, store: str, triton: str | None) -> dict:
    """The worker's configuration, as SKULENS_* variables (the layer `Config.load` reads)."""
    from ..server import Config
    default = Config()
    values = {f.name: getattr(cfg, f.name) for f in dataclasses.fields(cfg)
              if getattr(cfg, f.name) != getattr(default, f.name)}
    values.update(data=os.path.join(cfg.data, "workers", str(i)), port=port, store=store, workers=1,
                  reuse_port=1, keys=cfg.keys_path(), audit=cfg.audit_path() or "off")
    if cfg.metrics_port > 0:
        values["metrics_port"] = cfg.metrics_port + i
    if triton:
        values["triton"] = triton
    env = {k: v for k, v in os.environ.items() if not k.startswith("SKULENS_") or k == "SKULENS_SIMD"}
    env.update({f"SKULENS_{k.upper()}": str(v) for k, v in values.items()})
    env["PYTHONPATH"] = os.pathsep.join(p for p in sys.path if p)
    return env


class _Worker:
    def __init__(self, i: int, env: dict, ready: threading.Semaphore):
        self.i, self.env, self.ready = i, env, ready
        self.proc: subprocess.Popen | None = None
        self.restarts, self.backoff = 0, 1.0

    def start(self) -> None:
        self.proc = subprocess.Popen([sys.executable, "-m", "skulens.cli", "serve"], env=self.env,
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        threading.Thread(target=self._relay, args=(self.proc,), daemon=True).start()

    def _relay(self, proc) -> None:
        for line in proc.stdout:
            if line.startswith("skulens serving on"):
                self.ready.release()
            print(f"[worker {self.i}] {line}", end="", flush=True)


def run(cfg) -> int:
    n = cfg.workers or usable()
    cfg.data = os.path.abspath(cfg.data)
    os.makedirs(os.path.join(cfg.data, "workers"), mode=0o700, exist_ok=True)
    store = cfg.store or os.path.join(cfg.data, "catalog.db")
    port = cfg.port or _free_port(cfg.host)
    triton = None
    if cfg.triton == "start":  # one Triton for every worker
        from ..encode.triton import TritonServer
        triton = TritonServer(cfg.model_repo).start()
    ready = threading.Semaphore(0)
    workers = [_Worker(i, _env(cfg, i, port, store, triton.url if triton else None), ready) for i in range(n)]
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    try:
        for w in workers:
            w.start()
        for _ in workers:
            while not ready.acquire(timeout=0.2):
                if stop.is_set() or any(w.proc.poll() is not None for w in workers):
                    print("skulens serve: a worker failed to start", file=sys.stderr, flush=True)
                    return 2
        from ..catalog.store import describe
        print(f"skulens serving on {cfg.host}:{port} ({n} workers, store {describe(store)})", flush=True)
        while not stop.wait(0.5):
            for w in workers:
                if w.proc.poll() is not None:  # died: restart it, backing off if it keeps dying
                    print(f"skulens serve: worker {w.i} exited with {w.proc.returncode}; restarting in "
                          f"{w.backoff:.0f} s", file=sys.stderr, flush=True)
                    if stop.wait(w.backoff):
                        break
                    w.restarts += 1
                    w.backoff = min(30.0, w.backoff * 2)
                    w.start()
        return 0
    finally:
        for w in workers:
            if w.proc is not None and w.proc.poll() is None:
                w.proc.send_signal(signal.SIGTERM)
        end = time.monotonic() + cfg.grace_s + 10
        for w in workers:
            if w.proc is not None:
                try:
                    w.proc.wait(max(0.1, end - time.monotonic()))
                except subprocess.TimeoutExpired:
                    w.proc.kill()
        if triton is not None:
            triton.stop()
