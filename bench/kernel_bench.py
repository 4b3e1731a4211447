"""Exact top-k kernel benchmark: skulens beside numpy and faiss, in one process.

For every (N, d, threads, batch) it times, round-robin so machine noise hits all
systems alike: a plain read of each storage's bytes (the memory floor), numpy
(matmul + argpartition), faiss IndexFlatIP, faiss scalar quantiser fp16 and
8-bit, and skulens fp32/fp16/int8. Prints a table, writes JSON and a PNG.

    python bench/kernel_bench.py                 # the full grid of the issue
    python bench/kernel_bench.py --quick         # 100k x 128 only
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from pathlib import Path

import faiss
import numpy as np
from threadpoolctl import threadpool_limits
from tqdm import tqdm

from skulens.index import ExactIndex, best_simd
from machine import cpu_model
from synthetic import clustered, exact_topk, recall

K = 10
OUT = Path(__file__).parent


def numpy_search(x, q, k):
    s = q @ x.T
    part = np.argpartition(-s, k - 1, axis=1)[:, :k]
    ps = np.take_along_axis(s, part, 1)
    order = np.argsort(-ps, axis=1)
    return np.take_along_axis(ps, order, 1), np.take_along_axis(part, order, 1)


def build(x, threads):
    d = x.shape[1]
    systems = {}
    for st in ("fp32", "fp16", "int8"):
        ix = ExactIndex(d, st, threads=threads)
        ix.add(x)
        systems[f"skulens-{st}"] = ix
    flat = faiss.IndexFlatIP(d)
    flat.add(x)
    systems["faiss-flat"] = flat
    for name, qt in (("faiss-sq-fp16", faiss.ScalarQuantizer.QT_fp16), ("faiss-sq8", faiss.ScalarQuantizer.QT_8bit)):
        sq = faiss.IndexScalarQuantizer(d, qt, faiss.METRIC_INNER_PRODUCT)
        sq.train(x[: min(len(x), 200_000)])
        sq.add(x)
        systems[name] = sq
    return systems


def timed_calls(systems, x, q):
    calls = {}
    for name, ix in systems.items():
        if name.startswith("skulens"):
            calls[name] = (lambda ix=ix: ix.search(q, K))
            calls["floor-" + name.split("-")[1]] = ix.stream_read
        else:
            calls[name] = (lambda ix=ix: ix.search(q, K))
    calls["numpy"] = lambda: numpy_search(x, q, K)
    return calls


def measure(calls, rounds, min_time):
    """Median seconds per call; systems interleaved in every round."""
    times = {n: [] for n in calls}
    for fn in calls.values():
        fn()  # warm caches and lazy set-up
    for _ in range(rounds):
        for name, fn in calls.items():
            reps, t0 = 0, time.perf_counter()
            while True:
                fn()
                reps += 1
                el = time.perf_counter() - t0
                if el >= min_time or reps >= 50:
                    break
            times[name].append(el / reps)
    return {n: statistics.median(v) for n, v in times.items()}


def recall_check(dim):
    """Recall@10 of the compressed storages against float64 exact, clustered data."""
    x = clustered(50_000, dim, seed=1)
    q = clustered(500, dim, seed=2)
    _, truth, _ = exact_topk(x, q, K)
    out = {}
    for st in ("fp32", "fp16", "int8"):
        ix = ExactIndex(dim, st)
        ix.add(x)
        out[f"skulens-{st}"] = recall(ix.search(q, K)[1], truth)
    for name, qt in (("faiss-sq-fp16", faiss.ScalarQuantizer.QT_fp16), ("faiss-sq8", faiss.ScalarQuantizer.QT_8bit)):
        sq = faiss.IndexScalarQuantizer(dim, qt, faiss.METRIC_INNER_PRODUCT)
        sq.train(x)
        sq.add(x)
        out[name] = recall(sq.search(q, K)[1], truth)
    return out


def machine():
    cpu = cpu_model()
    return {"cpu": cpu, "cores": os.cpu_count(), "python": platform.python_version(),
            "numpy": np.__version__, "faiss": faiss.__version__, "skulens_simd": best_simd()}


def plot(rows, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(13, 4.5))
    single = [r for r in rows if r["batch"] == 1 and r["threads"] == 1]
    labels = [f'{r["n"] // 1000}k x {r["dim"]}' for r in single]
    w = 0.12
    names = ["skulens-fp32", "faiss-flat", "numpy", "skulens-fp16", "faiss-sq-fp16", "skulens-int8", "faiss-sq8"]
    floors = {"skulens-fp32": "fp32", "faiss-flat": "fp32", "numpy": "fp32", "skulens-fp16": "fp16",
              "faiss-sq-fp16": "fp16", "skulens-int8": "int8", "faiss-sq8": "int8"}
    for i, n in enumerate(names):
        eff = [100 * r["ms"]["floor-" + floors[n]] / r["ms"][n] for r in single]
        axes[0].bar(np.arange(len(single)) + (i - 3) * w, eff, w, label=n)
    axes[0].axhline(90, color="k", lw=0.8, ls="--")
    axes[0].set_xticks(range(len(single)), labels, rotation=20)
    axes[0].set_ylabel("% of memory read floor (own storage type)")
    axes[0].set_title("Single query, 1 thread (higher is better)")
    axes[0].legend(fontsize=7, ncol=2)
    batch = [r for r in rows if r["batch"] > 1 and r["threads"] == 1]
    for i, n in enumerate(names):
        ratio = []
        for r in batch:
            one = next(s for s in single if s["n"] == r["n"] and s["dim"] == r["dim"])
            ratio.append(r["ms"][n] / r["batch"] / one["ms"][n])
        axes[1].bar(np.arange(len(batch)) + (i - 3) * w, ratio, w, label=n)
    axes[1].axhline(1 / 8, color="k", lw=0.8, ls="--")
    axes[1].set_xticks(range(len(batch)), labels[: len(batch)], rotation=20)
    axes[1].set_ylabel("per-query cost, batch 32 / batch 1")
    axes[1].set_title("Batching gain, 1 thread (lower is better; line = 1/8)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="100k x 128 only")
    ap.add_argument("--n", type=int, nargs="*", default=[100_000, 1_000_000])
    ap.add_argument("--dim", type=int, nargs="*", default=[128, 256, 512])
    ap.add_argument("--threads", type=int, nargs="*", default=[1, 2])
    ap.add_argument("--batch", type=int, nargs="*", default=[1, 32])
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--out", type=Path, default=OUT / "kernel_bench.json")
    a = ap.parse_args()
    if a.quick:
        a.n, a.dim = [100_000], [128]

    rng = np.random.default_rng(0)
    rows = []
    grid = [(n, d) for n in a.n for d in a.dim]
    bar = tqdm(total=len(grid) * len(a.threads) * len(a.batch), desc="kernel bench")
    for n, d in grid:
        x = rng.standard_normal((n, d)).astype(np.float32)
        x /= np.linalg.norm(x, axis=1, keepdims=True)
        qs = rng.standard_normal((max(a.batch), d)).astype(np.float32)
        qs /= np.linalg.norm(qs, axis=1, keepdims=True)
        for t in a.threads:
            faiss.omp_set_num_threads(t)
            systems = build(x, t)
            with threadpool_limits(t):
                for b in a.batch:
                    calls = timed_calls(systems, x, qs[:b])
                    rounds = a.rounds if n <= 100_000 else max(3, a.rounds // 2)
                    ms = {k: v * 1e3 for k, v in measure(calls, rounds, 0.05 if n <= 100_000 else 0.0).items()}
                    rows.append({"n": n, "dim": d, "threads": t, "batch": b, "ms": ms})
                    bar.update()
            del systems
    bar.close()

    recalls = {d: recall_check(d) for d in sorted(set(a.dim))}
    report = {"machine": machine(), "command": "python bench/kernel_bench.py" + (" --quick" if a.quick else ""),
              "k": K, "rows": rows, "recall_at_10": recalls}
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps(report, indent=1))
    plot(rows, a.out.with_suffix(".png"))
    print_table(report)


def print_table(report):
    names = ["numpy", "faiss-flat", "skulens-fp32", "faiss-sq-fp16", "skulens-fp16", "faiss-sq8", "skulens-int8"]
    print(f"\n{report['machine']}\nms per call (k={report['k']}); eff = read floor / time; b32/q = per-query cost vs batch 1")
    print("| N | d | thr | batch | floor fp32/fp16/int8 | " + " | ".join(names) + " | eff fp32/fp16/int8 |")
    print("|" + "---|" * (len(names) + 5))
    single = {(r["n"], r["dim"], r["threads"]): r for r in report["rows"] if r["batch"] == 1}
    for r in report["rows"]:
        m = r["ms"]
        floor = "/".join(f'{m["floor-" + s]:.3g}' for s in ("fp32", "fp16", "int8"))
        cells = " | ".join(f"{m[n]:.3g}" for n in names)
        if r["batch"] == 1:
            extra = "/".join(f'{100 * m["floor-" + s] / m["skulens-" + s]:.0f}%' for s in ("fp32", "fp16", "int8"))
        else:
            one = single[(r["n"], r["dim"], r["threads"])]["ms"]
            extra = "b32/q " + "/".join(f'{m["skulens-" + s] / r["batch"] / one["skulens-" + s]:.3f}'
                                       for s in ("fp32", "fp16", "int8"))
        print(f'| {r["n"]} | {r["dim"]} | {r["threads"]} | {r["batch"]} | {floor} | {cells} | {extra} |')
    print("\nrecall@10 vs float64 exact (clustered, 50k):")
    for d, rec in report["recall_at_10"].items():
        print(f"  d={d}: " + ", ".join(f"{k} {v:.4f}" for k, v in rec.items()))


if __name__ == "__main__":
    main()
