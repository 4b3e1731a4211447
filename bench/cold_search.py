"""Why a search costs more inside a server than in a loop: the same hnswlib query, back to back
and after what a server does between two requests at low load (sleep while waiting for the
network; other work through the caches).

    python bench/cold_search.py [--n 100000] [--dim 256]

Prints a table and writes bench/cold_search.json.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import hnswlib
import numpy as np
from tqdm import tqdm

from grpc_floor import spin
from synthetic import manifold

OUT = Path(__file__).parent


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=100_000)
    ap.add_argument("--dim", type=int, default=256)
    ap.add_argument("--queries", type=int, default=512)
    args = ap.parse_args()
    x = manifold(args.n, args.dim, seed=1)
    g = hnswlib.Index(space="ip", dim=args.dim)
    g.init_index(args.n, M=16, ef_construction=100)
    for a in tqdm(range(0, args.n, 10_000), desc="graph", unit="10k"):
        g.add_items(x[a:a + 10_000], np.arange(a, min(a + 10_000, args.n)), num_threads=2)
    # Every case gets queries of its own: a query asked twice finds its path cached.
    fresh = iter(range(2, 10**6))
    for v in manifold(args.queries, args.dim, seed=next(fresh)):   # warm the graph's upper layers
        g.knn_query(v, k=10, num_threads=1)
    junk = np.ones(64 * 2**20 // 8)   # 64 MiB: more than this machine's L3
    between = {"back to back": None,
               "after 0.5 ms asleep": lambda: time.sleep(0.0005),
               "after 2 ms asleep": lambda: time.sleep(0.002),
               "after 0.5 ms of Python work": lambda: spin(500),
               "after reading 64 MiB": lambda: junk.sum()}
    rows = []
    for ef in (16, 64):
        g.set_ef(ef)
        for label, f in between.items():
            ts = []
            for v in manifold(args.queries, args.dim, seed=next(fresh)):
                if f:
                    f()
                t = time.perf_counter_ns()
                g.knn_query(v, k=10, num_threads=1)
                ts.append(time.perf_counter_ns() - t)
            rows.append({"ef": ef, "case": label, "p50_us": float(np.median(ts) / 1e3),
                         "p99_us": float(np.percentile(ts, 99) / 1e3)})
            print(f"ef {ef:3d}  {label:28s} p50 {rows[-1]['p50_us']:6.1f} us  p99 {rows[-1]['p99_us']:6.1f} us")
    (OUT / "cold_search.json").write_text(json.dumps({"command": "python bench/cold_search.py", "n": args.n,
                                                      "dim": args.dim, "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
