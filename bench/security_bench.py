"""What the production envelope costs, and what it protects, side by side in one run.

    python bench/security_bench.py [--out bench/security_bench.json]

1. cost: Search-by-vector p50 at concurrency 1 against two servers in their own processes, one as
   before (no keys, no metrics) and one with API keys, the audit trail and Prometheus metrics on;
   rounds alternate between them. Target: <= 1.03x.
2. flood: a polite client (one thread, 100 searches a second, its own key) alone, then while a
   flooding client (8 threads, unpaced, another key) runs, against a server with per-key limits
   (key_rate 200/s, burst 50, 4 in flight). Target: the polite p99 at most 2x its own alone.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time

import grpc
import numpy as np

from machine import cpu_model

HERE = os.path.dirname(os.path.abspath(__file__))

from skulens.client import Client  # noqa: E402
from skulens.security.keys import KeyStore  # noqa: E402

D, N = 128, 10_000




def serve(work: str, name: str, *extra: str):
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))  # the server runs the skulens this script imports
    proc = subprocess.Popen([sys.executable, "-m", "skulens.cli", "serve", "--data", os.path.join(work, name),
                             "--port", "0", "--dim", str(D), *extra], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, text=True)
    return proc, proc.stdout.readline().split(" on ")[1].split(" ")[0]


def fill(target: str, key: str | None, x: np.ndarray) -> None:
    with Client(target, api_key=key, timeout=60) as c:
        for i in range(0, len(x), 1000):
            c.upsert([dict(id=f"p{j}", vector=x[j]) for j in range(i, min(i + 1000, len(x)))])


def timed(c: Client, q: np.ndarray) -> float:
    t = time.perf_counter()
    c.search(vector=q, top_k=10)
    return (time.perf_counter() - t) * 1e3


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=10)
    ap.add_argument("--queries", type=int, default=300)
    ap.add_argument("--flood-seconds", type=float, default=15.0)
    ap.add_argument("--out")
    a = ap.parse_args(argv)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((N, D)).astype(np.float32)
    qs = rng.standard_normal((a.queries, D)).astype(np.float32)
    work = tempfile.mkdtemp(prefix="skulens-secbench-")
    store = KeyStore(os.path.join(work, "keys.json"))
    _, key = store.add("write")
    _, key2 = store.add("read")
    out = {"cpu": cpu_model(), "cores": os.cpu_count(), "products": N, "dim": D}
    procs = []
    try:
        # 1. cost of keys + audit + metrics on the search path
        plain, t_plain = serve(work, "plain", "--keys", os.path.join(work, "none.json"))
        secure, t_secure = serve(work, "secure", "--keys", store.path, "--metrics-port", "0")
        procs += [plain, secure]
        fill(t_plain, None, x)
        fill(t_secure, key, x)
        lat = {"plain": [], "secure": []}
        with Client(t_plain) as cp, Client(t_secure, api_key=key) as cs:
            for q in qs[:50]:
                timed(cp, q), timed(cs, q)   # warm both
            for r in range(a.rounds):
                for name, c in ((("plain", cp), ("secure", cs)) if r % 2 == 0 else (("secure", cs), ("plain", cp))):
                    lat[name] += [timed(c, q) for q in qs]
        p50 = {n: statistics.median(v) for n, v in lat.items()}
        out["cost"] = {"p50_ms": p50, "p99_ms": {n: float(np.percentile(v, 99)) for n, v in lat.items()},
                       "ratio_p50": p50["secure"] / p50["plain"], "queries_each": len(lat["plain"])}
        for p in (plain, secure):
            p.terminate()
            p.wait(30)
        # 2. a flooding key against a polite one, with per-key limits
        lim, t_lim = serve(work, "limited", "--keys", store.path, "--config", _limits_toml(work))
        procs.append(lim)
        fill(t_lim, key, x)

        def polite(seconds: float) -> list[float]:
            got = []
            with Client(t_lim, api_key=key2) as c:
                end = time.perf_counter() + seconds
                i = 0
                while time.perf_counter() < end:
                    t0 = time.perf_counter()
                    got.append(timed(c, qs[i % len(qs)]))
                    i += 1
                    time.sleep(max(0.0, 0.01 - (time.perf_counter() - t0)))
            return got

        alone = polite(a.flood_seconds)
        stop, codes = threading.Event(), {}

        def flooder():
            with Client(t_lim, api_key=key) as c:
                i = 0
                while not stop.is_set():
                    try:
                        c.search(vector=qs[i % len(qs)], top_k=10)
                        k = "OK"
                    except grpc.RpcError as e:
                        k = e.code().name
                    codes[k] = codes.get(k, 0) + 1
                    i += 1
        fl = [threading.Thread(target=flooder) for _ in range(8)]
        for t in fl:
            t.start()
        time.sleep(1.0)
        flooded = polite(a.flood_seconds)
        stop.set()
        for t in fl:
            t.join()
        out["flood"] = {"polite_alone_p50_ms": statistics.median(alone), "polite_alone_p99_ms": float(np.percentile(alone, 99)),
                        "polite_flooded_p50_ms": statistics.median(flooded),
                        "polite_flooded_p99_ms": float(np.percentile(flooded, 99)),
                        "ratio_p99": float(np.percentile(flooded, 99) / np.percentile(alone, 99)),
                        "flooder_codes": codes, "polite_calls": [len(alone), len(flooded)]}
    finally:
        for p in procs:
            if p.poll() is None:
                p.terminate()
                p.wait(30)
    print(json.dumps(out, indent=1))
    if a.out:
        with open(a.out, "w") as f:
            json.dump(out, f, indent=1)
    return 0


def _limits_toml(work: str) -> str:
    p = os.path.join(work, "limits.toml")
    with open(p, "w") as f:
        f.write("[server]\nkey_rate = 200.0\nkey_burst = 50\nkey_concurrency = 4\n")
    return p


if __name__ == "__main__":
    sys.exit(main())
