"""Soak: mixed search / upsert / delete traffic from `skulens loadgen` against a real server with
auth and metrics on, for a while; the server's errors and its memory over time.

    python bench/soak.py --duration 600 [--out bench/soak.json]

The server runs in its own process (`skulens serve`, 20k products of 64-d); three load
generators run side by side (Search at concurrency 4, Upsert and Delete at 1 each, every call with
an API key). RSS is sampled every second from /proc; growth is measured from the end of warm-up
to the end. Warm-up is the first 20% of the run, and at least until 10 s after the first background
snapshot (every 100,000 changes): saving the indexes leaves its buffers with the allocator once
(a step of ~8 MB at 20k products, measured), which is a working set, not a leak. Exit code 1 when
any call failed or RSS grew by over 5% after warm-up.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time

import numpy as np

from machine import cpu_model

HERE = os.path.dirname(os.path.abspath(__file__))

from skulens.client import Client, loadgen  # noqa: E402
from skulens.security.keys import KeyStore  # noqa: E402

D = 64


def rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS:"))




def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--duration", type=float, default=600.0)
    ap.add_argument("--products", type=int, default=20_000)
    ap.add_argument("--out")
    a = ap.parse_args(argv)
    work = tempfile.mkdtemp(prefix="skulens-soak-")
    store = KeyStore(os.path.join(work, "keys.json"))
    _, key = store.add("admin")   # admin: the soak reads the catalogue's snapshot seq from Stats
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))  # the server runs the skulens this script imports
    proc = subprocess.Popen([sys.executable, "-m", "skulens.cli", "serve", "--data", os.path.join(work, "c"),
                             "--port", "0", "--dim", str(D), "--keys", store.path, "--metrics-port", "0"],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        target = proc.stdout.readline().split(" on ")[1].split(" ")[0]
        rng = np.random.default_rng(0)
        x = rng.standard_normal((a.products, D)).astype(np.float32)
        with Client(target, api_key=key, timeout=60) as c:
            for i in range(0, a.products, 1000):
                c.upsert([dict(id=f"p{j}", category=f"c{j % 10}", vector=x[j]) for j in range(i, min(i + 1000, a.products))])
        md = {"authorization": f"Bearer {key}"}
        q = {"query": {"vector": {"values": rng.standard_normal(D).tolist()}}, "topK": 10, "filter": {"expression": "category=c3"}}
        up = {"products": [{"id": "churn", "category": "c1", "vector": rng.standard_normal(D).tolist()}]}
        de = {"ids": ["churn"]}
        reports = {}
        samples = []
        t0 = time.perf_counter()

        def load(name, call, payload, conc):
            req = loadgen.load_payload(call, json.dumps(payload))
            reports[name] = loadgen.run(target, call, req, concurrency=conc, total=None, duration=a.duration,
                                        metadata=md)
        threads = [threading.Thread(target=load, args=args) for args in
                   (("search", "Search", q, 4), ("upsert", "Upsert", up, 1), ("delete", "Delete", de, 1))]
        for t in threads:
            t.start()
        first_snapshot = None
        with Client(target, api_key=key, timeout=10) as c:
            base = c.stats()["snapshot_seq"]
            while any(t.is_alive() for t in threads):
                now = time.perf_counter() - t0
                samples.append((now, rss_kib(proc.pid)))
                if first_snapshot is None and c.stats()["snapshot_seq"] != base:
                    first_snapshot = now
                time.sleep(1.0)
        for t in threads:
            t.join()
    finally:
        proc.terminate()
        proc.wait(30)
    warm_end = max(0.2 * a.duration, (first_snapshot or 0.0) + 10.0)
    warm = [r for t, r in samples if t >= warm_end]
    growth = (warm[-1] - warm[0]) / warm[0] if len(warm) > 1 else 0.0
    errors = {n: {k: v for k, v in r["statusCodeDistribution"].items() if k != "OK"} for n, r in reports.items()}
    out = {"cpu": cpu_model(), "cores": os.cpu_count(), "duration_s": a.duration, "products": a.products,
           "calls": {n: r["count"] for n, r in reports.items()},
           "rps": {n: round(r["rps"], 1) for n, r in reports.items()},
           "p50_ms": {n: r["latencyDistribution"][2]["latency"] / 1e6 for n, r in reports.items() if r["count"]},
           "p99_ms": {n: r["latencyDistribution"][6]["latency"] / 1e6 for n, r in reports.items() if r["count"]},
           "errors": errors, "first_snapshot_s": first_snapshot, "warmup_end_s": warm_end,
           "rss_kib_after_warmup": warm[0] if warm else None, "rss_kib_end": warm[-1] if warm else None,
           "rss_growth": round(growth, 4), "rss_samples": samples[:: max(1, len(samples) // 100)]}
    print(json.dumps({k: v for k, v in out.items() if k != "rss_samples"}, indent=1))
    if a.out:
        with open(a.out, "w") as f:
            json.dump(out, f, indent=1)
    return 0 if not any(errors.values()) and growth <= 0.05 else 1


if __name__ == "__main__":
    sys.exit(main())
