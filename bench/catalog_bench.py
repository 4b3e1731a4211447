"""Catalogue benchmark: recall@10 against latency for exact / ann / auto, with
and without a filter keeping 10%, beside bare hnswlib (the pip package's
`knn_query`, its filter a Python callable) walking the very same graph (the
catalogue's, saved and loaded by pip hnswlib: one file format), plus durable
upsert throughput and start-up time from a snapshot and from SQLite alone.

    python bench/catalog_bench.py                      # 100k and 1M at d=256
    python bench/catalog_bench.py --n 100000           # one size
    python bench/catalog_bench.py --calibrate          # where auto should switch to exact

Each system is timed on its own share of the queries, interleaved one query at
a time: machine noise hits all alike and no system meets a query another one
has just warmed the caches for. Writes JSON and a PNG next to this file.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
import time
from pathlib import Path

import faiss
from importlib.metadata import version
import numpy as np
from tqdm import tqdm

from skulens.catalog import Catalog, snapshot
from machine import cpu_model
from synthetic import clustered, manifold

OUT = Path(__file__).parent
K = 10
EFS = [16, 32, 48, 64, 96, 128, 192, 256, 384, 512, 768]


def product(i: int, v) -> dict:
    return dict(id=f"p{i}", sku=f"SKU{i}", title=f"product {i}", category=f"c{i % 10}",
                attributes={"shard": str(i % 1000)}, vector=v)


def truth_topk(x: np.ndarray, q: np.ndarray, k: int, keep: np.ndarray | None = None) -> np.ndarray:
    ids = np.arange(len(x)) if keep is None else np.flatnonzero(keep)
    flat = faiss.IndexFlatIP(x.shape[1])
    flat.add(x[ids])
    return ids[flat.search(q, k)[1]]


def rec(found: list[list[str]], truth: np.ndarray) -> float:
    return float(np.mean([len({int(f[1:]) for f in fs} & set(t.tolist())) / K for fs, t in zip(found, truth)]))


def stats_us(ns: list[int]) -> dict:
    a = np.asarray(ns) / 1e3
    return {"p50_us": float(np.percentile(a, 50)), "p99_us": float(np.percentile(a, 99)),
            "mean_us": float(a.mean())}


def run_split(systems: dict, queries: np.ndarray, truth: np.ndarray):
    """Time each system on its own share of the queries, interleaved: query j
    goes to system j mod S only. A query seen a second time finds the graph
    nodes it touched still in cache, so a system timed after another on the
    same query would look faster than it is; with disjoint shares every
    measured query is a first visit, as in serving. Returns name -> row."""
    names = list(systems)
    lat = {n: [] for n in names}
    res = {n: [] for n in names}
    idx = {n: [] for n in names}
    for j, q in enumerate(queries):
        name = names[j % len(names)]
        t = time.perf_counter_ns()
        r = systems[name](q)
        lat[name].append(time.perf_counter_ns() - t)
        res[name].append(r)
        idx[name].append(j)
    return {n: {"recall": rec(res[n], truth[idx[n]]), "queries": len(idx[n]), **stats_us(lat[n])} for n in names}


def bare_graph(cat: Catalog):
    """pip hnswlib loaded with the catalogue's own graph (labels = slots), read from the
    snapshot the catalogue writes (its graph file is hnswlib's format)."""
    import hnswlib
    seq = cat.checkpoint()
    st = cat.stats()
    b = hnswlib.Index(space="ip", dim=cat.dim)
    # Room for exactly the graph's elements (live + deleted), as hnswlib sizes a loaded index itself.
    b.load_index(snapshot.graph_path(os.path.join(cat.path, "snapshots"), seq),
                 max_elements=st["products"] + st["hnsw"]["deleted"])
    return b


def bare_fn(b, ef, filt=None):
    """Bare hnswlib: knn_query(k=10) at ef (set once per curve point)."""
    b.set_ef(ef)

    def f(q):
        labels, _ = b.knn_query(q, k=K, num_threads=1, filter=filt)
        return labels[0]
    return f


DATA = {"clustered": clustered, "manifold": manifold}


def bench_size(n: int, dim: int, nq: int, nq_exact: int, singles: int, workdir: Path, data: str = "clustered",
               startup: bool = True) -> dict:
    out: dict = {"n": n, "dim": dim, "data": data}
    gen = DATA[data]
    x = gen(n + singles, dim, seed=1)
    q = gen(nq, dim, seed=2)
    path = workdir / f"cat-{n}"
    shutil.rmtree(path, ignore_errors=True)

    # --- durable upserts ------------------------------------------------------
    cat = Catalog.open(path, dim, snapshot_every=10**12)
    batch = 1000
    # Acknowledged = committed to SQLite and searchable (kernel); the graph
    # follows in the background, with back-pressure past max_unindexed.
    burst = min(n, cat.max_unindexed)
    t0 = time.perf_counter()
    for a in tqdm(range(0, n, batch), desc=f"ingest {n}", unit="batch"):
        cat.upsert([product(i, x[i]) for i in range(a, min(a + batch, n))])
        if a + batch == burst:
            out["upsert_batched_burst_per_s"] = burst / (time.perf_counter() - t0)
    acked = time.perf_counter() - t0
    out["upsert_batched_per_s"] = n / acked
    out["upsert_batch_size"] = batch
    cat.wait_indexed()
    out["ingest_indexed_per_s"] = n / (time.perf_counter() - t0)
    t0 = time.perf_counter()
    for i in range(n, n + singles):
        cat.upsert([product(i, x[i])])
    out["upsert_single_per_s"] = singles / (time.perf_counter() - t0)
    # The same single-product upserts from 8 threads at once: group commit
    # lets one transaction (one fsync) carry what queued meanwhile.
    import threading
    extra = gen(8 * 100, dim, seed=3)

    def writer(t):
        for j in range(100):
            i = t * 100 + j
            cat.upsert([product(10**9 + i, extra[i])])
    threads = [threading.Thread(target=writer, args=(t,)) for t in range(8)]
    seq0, t0 = cat.stats()["seq"], time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    out["upsert_single_8threads_per_s"] = 800 / (time.perf_counter() - t0)
    out["upsert_single_8threads_commits"] = cat.stats()["seq"] - seq0
    cat.delete([f"p{10**9 + i}" for i in range(800)])
    cat.wait_indexed()
    t0 = time.perf_counter()
    cat.checkpoint()
    out["snapshot_write_s"] = time.perf_counter() - t0
    print(f"upserts: batched {out['upsert_batched_per_s']:.0f}/s acknowledged "
          f"(first {burst}: {out.get('upsert_batched_burst_per_s', 0):.0f}/s), "
          f"{out['ingest_indexed_per_s']:.0f}/s until the graph held all; single {out['upsert_single_per_s']:.0f}/s; "
          f"snapshot {out['snapshot_write_s']:.1f} s")

    bare = bare_graph(cat)

    keep = np.array([i % 10 == 3 for i in range(n + singles)])
    truth = truth_topk(x, q, K)
    truth_f = truth_topk(x, q, K, keep)
    # The graph's labels are the catalogue's slots, which here equal the ingest order.
    filt = keep.tobytes().__getitem__

    curves = {}
    for name, filtered in (("unfiltered", False), ("filter10", True)):
        rows = []
        f = "category=c3" if filtered else None
        tr = truth_f if filtered else truth
        for ef in tqdm(EFS, desc=f"{name} n={n}"):
            systems = {
                "hnswlib": (lambda b: (lambda qq: [f"p{i}" for i in b(qq)]))(bare_fn(bare, ef, filt if filtered else None)),
                "ann": lambda qq, ef=ef: [h.id for h in cat.search(qq, K, filters=f, mode="ann", ef=ef)],
                "auto": lambda qq, ef=ef: [h.id for h in cat.search(qq, K, filters=f, mode="auto", ef=ef)],
            }
            for s, r in run_split(systems, q, tr).items():
                rows.append({"system": s, "ef": ef, **r})
        r = run_split({"exact": lambda qq: [h.id for h in cat.search(qq, K, filters=f, mode="exact")]},
                      q[:nq_exact], tr[:nq_exact])["exact"]
        rows.append({"system": "exact", "ef": None, **r})
        curves[name] = rows
        print_curve(n, name, rows)
    out["curves"] = curves
    out["routes"] = cat.stats()["searches"]
    cat.close()

    # --- start-up ----------------------------------------------------------------------
    if not startup:
        shutil.rmtree(path, ignore_errors=True)
        return out
    t0 = time.perf_counter()
    with Catalog.open(path, dim) as c:
        out["startup_snapshot_s"] = time.perf_counter() - t0
    shutil.move(str(path / "snapshots"), str(path / "snapshots.off"))
    t0 = time.perf_counter()
    c = Catalog.open(path, dim, progress=True, snapshot_every=10**12)
    out["startup_sqlite_s"] = time.perf_counter() - t0  # searchable (exact) from here
    c.wait_indexed()
    out["graph_rebuild_s"] = time.perf_counter() - t0
    c.close(snapshot=False)  # this is a measurement: no snapshot on close
    out["db_bytes"] = os.path.getsize(path / "catalog.db")
    print(f"start-up: from snapshot {out['startup_snapshot_s']:.1f} s, from SQLite alone "
          f"{out['startup_sqlite_s']:.1f} s (graph rebuilt in the background by {out['graph_rebuild_s']:.0f} s)")
    shutil.rmtree(path, ignore_errors=True)
    return out


def print_curve(n, name, rows):
    print(f"\n n={n} {name}")
    print(f"  {'system':8} {'ef':>4} {'recall':>7} {'p50 us':>8} {'p99 us':>8}")
    for r in rows:
        print(f"  {r['system']:8} {str(r['ef']):>4} {r['recall']:7.4f} {r['p50_us']:8.0f} {r['p99_us']:8.0f}")


def at_recall(rows, system, target=0.98):
    """Lowest-latency point of `system` reaching the target recall."""
    ok = [r for r in rows if r["system"] == system and r["recall"] >= target]
    return min(ok, key=lambda r: r["p50_us"]) if ok else None


def calibrate(dim: int, workdir: Path) -> dict:
    """Latency of exact scan vs HNSW (at recall >= 0.98) as the candidate count grows,
    unfiltered (catalogue size) and filtered (matching count in a 200k catalogue)."""
    sizes = [1000, 2000, 5000, 10000, 20000, 50000, 100000, 200000]
    x = clustered(sizes[-1], dim, seed=1)
    q = clustered(200, dim, seed=2)
    path = workdir / "calib"
    shutil.rmtree(path, ignore_errors=True)
    out = {"unfiltered": [], "filtered": []}
    with Catalog.open(path, dim, snapshot_every=10**12) as cat:
        have = 0
        for n in sizes:
            for a in range(have, n, 1000):
                cat.upsert([product(i, x[i]) for i in range(a, min(a + 1000, n))])
            have = n
            truth = truth_topk(x[:n], q, K)
            row = {"n": n}
            for ef in EFS:
                r = run_split({"ann": lambda qq: [h.id for h in cat.search(qq, K, mode="ann", ef=ef)]}, q, truth)["ann"]
                if r["recall"] >= 0.98:
                    row.update(ann_ef=ef, ann_us=r["p50_us"])
                    break
            r = run_split({"exact": lambda qq: [h.id for h in cat.search(qq, K, mode="exact")]}, q, truth)["exact"]
            row["exact_us"] = r["p50_us"]
            out["unfiltered"].append(row)
            print("calibrate", row)
        # Filters keeping m of 1000 shards: from 0.1% to 25.6% of the catalogue.
        for m in (1, 2, 5, 10, 25, 50, 100, 256):
            f = [[("shard", str(s)) for s in range(m)]]
            keep = np.array([i % 1000 < m for i in range(have)])
            truth = truth_topk(x[:have], q, K, keep)
            row = {"matching": int(keep.sum()), "fraction": m / 1000}
            for ef in EFS:
                r = run_split({"ann": lambda qq: [h.id for h in cat.search(qq, K, filters=f, mode="ann", ef=ef)]},
                              q, truth)["ann"]
                if r["recall"] >= 0.98:
                    row.update(ann_ef=ef, ann_us=r["p50_us"])
                    break
            r = run_split({"exact": lambda qq: [h.id for h in cat.search(qq, K, filters=f, mode="exact")]},
                          q, truth)["exact"]
            row["exact_us"] = r["p50_us"]
            out["filtered"].append(row)
            print("calibrate", row)
    shutil.rmtree(path, ignore_errors=True)
    return out


def plot(report: dict, png: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sizes = report["sizes"]
    fig, axes = plt.subplots(len(sizes), 2, figsize=(11, 4 * len(sizes)), squeeze=False)
    for row, s in zip(axes, sizes):
        for ax, name in zip(row, ("unfiltered", "filter10")):
            rows = s["curves"][name]
            for system, style in (("hnswlib", "k--o"), ("ann", "b-s"), ("auto", "g-^")):
                pts = [r for r in rows if r["system"] == system]
                ax.plot([r["recall"] for r in pts], [r["p50_us"] for r in pts], style, label=system, ms=4)
            ex = [r for r in rows if r["system"] == "exact"][0]
            ax.plot([ex["recall"]], [ex["p50_us"]], "r*", ms=12, label="exact")
            ax.set_yscale("log")
            ax.set_xlabel("recall@10")
            ax.set_ylabel("p50 latency (us)")
            ax.set_title(f"{s['n']:,} x {s['dim']} — {name}")
            ax.axvline(0.98, color="grey", lw=0.5)
            ax.grid(alpha=0.3)
            ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(png, dpi=110)


def markdown(report: dict) -> str:
    """The tables RESULTS.md quotes."""
    out = []
    for s in report["sizes"]:
        out.append(f"\n#### {s['n']:,} x {s['dim']}, {s.get('data', 'clustered')} data\n")
        out.append("| | hnswlib p50 / p99 (us) | ann p50 / p99 | auto p50 / p99 | recall@10 hnswlib / ann / auto | auto / hnswlib p50 |")
        out.append("|---|---|---|---|---|---|")
        for name in ("unfiltered", "filter10"):
            rows = s["curves"][name]
            for ef in EFS:
                r = {x["system"]: x for x in rows if x["ef"] == ef}
                h, a, u = r["hnswlib"], r["ann"], r["auto"]
                out.append(f"| {name} ef={ef} | {h['p50_us']:.0f} / {h['p99_us']:.0f} | {a['p50_us']:.0f} / "
                           f"{a['p99_us']:.0f} | {u['p50_us']:.0f} / {u['p99_us']:.0f} | {h['recall']:.3f} / "
                           f"{a['recall']:.3f} / {u['recall']:.3f} | {u['p50_us'] / h['p50_us']:.2f} |")
            ex = [x for x in rows if x["system"] == "exact"][0]
            out.append(f"| {name} exact | | | {ex['p50_us']:.0f} / {ex['p99_us']:.0f} | 1.000 | |")
        out.append("")
        for name in ("unfiltered", "filter10"):
            b, a = at_recall(s["curves"][name], "hnswlib"), at_recall(s["curves"][name], "auto")
            if b and a:
                out.append(f"- {name}: first point at recall@10 >= 0.98: hnswlib {b['p50_us']:.0f} us (ef {b['ef']}), "
                           f"auto {a['p50_us']:.0f} us (ef {a['ef']}) -> **{a['p50_us'] / b['p50_us']:.2f}x**")
            ratios = [r["auto"]["p50_us"] / r["hnswlib"]["p50_us"] for r in (
                {x["system"]: x for x in s["curves"][name] if x["ef"] == ef} for ef in EFS)]
            out.append(f"- {name}: auto / hnswlib at equal ef (the same graph): {min(ratios):.2f}-{max(ratios):.2f}x")
        out.append(f"- upserts: {s['upsert_batched_per_s']:,.0f}/s acknowledged in batches of {s['upsert_batch_size']} "
                   f"(first {min(s['n'], 100_000):,}: {s.get('upsert_batched_burst_per_s', 0):,.0f}/s); "
                   f"{s['ingest_indexed_per_s']:,.0f}/s until the graph held all; single upserts {s['upsert_single_per_s']:,.0f}/s "
                   f"from one thread, {s.get('upsert_single_8threads_per_s', 0):,.0f}/s from 8 threads "
                   f"({s.get('upsert_single_8threads_commits', 0)} commits for 800 upserts)")
        if "startup_snapshot_s" in s:
            out.append(f"- start-up: from a snapshot {s['startup_snapshot_s']:.1f} s; from SQLite alone "
                       f"{s['startup_sqlite_s']:.1f} s to searchable, graph rebuilt in the background by "
                       f"{s['graph_rebuild_s']:.0f} s; database {s['db_bytes'] / 2**20:,.0f} MiB")
    return "\n".join(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, nargs="*", default=[100_000, 1_000_000])
    ap.add_argument("--dim", type=int, default=256)
    ap.add_argument("--queries", type=int, default=1000)
    ap.add_argument("--exact-queries", type=int, default=200)
    ap.add_argument("--singles", type=int, default=500, help="single-product upserts timed after the bulk load")
    ap.add_argument("--calibrate", action="store_true")
    ap.add_argument("--data", choices=sorted(DATA), default="clustered",
                    help="clustered: isotropic, hard for graphs; manifold: low intrinsic dimension, like learned embeddings")
    ap.add_argument("--no-startup", action="store_true", help="skip the start-up measurements")
    ap.add_argument("--workdir", type=Path, default=None, help="where catalogues are built (default: a temp dir)")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="skulens-bench-"))
    cpu = cpu_model()
    report = {"machine": {"cpu": cpu, "cores": os.cpu_count(), "hnswlib": version("hnswlib"),
                          "graph": "hnswlib 0.6.2 C++ (vendored) + skulens walk"},
              "command": "python bench/catalog_bench.py " + " ".join(os.sys.argv[1:])}
    if args.calibrate:
        report["calibration"] = calibrate(args.dim, workdir)
        path = args.out or OUT / "catalog_calibration.json"
    else:
        report["sizes"] = [bench_size(n, args.dim, args.queries, args.exact_queries, args.singles, workdir,
                                      args.data, not args.no_startup) for n in args.n]
        for s in report["sizes"]:
            for name in ("unfiltered", "filter10"):
                b, a = at_recall(s["curves"][name], "hnswlib"), at_recall(s["curves"][name], "auto")
                if b and a:
                    print(f"n={s['n']} {name}: at recall>=0.98 hnswlib {b['p50_us']:.0f} us (ef {b['ef']}), "
                          f"auto {a['p50_us']:.0f} us (ef {a['ef']}): ratio {a['p50_us'] / b['p50_us']:.2f}")
        path = args.out or OUT / "catalog_bench.json"
        plot(report, path.with_suffix(".png"))
        print(markdown(report))
    path.write_text(json.dumps(report, indent=1))
    print("wrote", path)


if __name__ == "__main__":
    main()
