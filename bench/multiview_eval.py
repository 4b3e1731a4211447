"""Several reference images per product against one, measured from outside through gRPC.

The Fashion-MNIST test articles are upserted as a catalogue of clean pictures (the server embeds
them), and scanner frames of some of them are searched as JPEG bytes on both view protocols
(bench/scanner_eval.py's `measure`). Then every product is upserted again with two more reference
images, views of our own protocol (skulens.data.views) with fixed seeds that no query uses, and
the same frames are searched again: one hit per product, scored by its best image. The queries'
holdout protocol (skulens.data.holdout) shares no code with the stored views.

Also: the server's search time per query (Timings.search_us, p50/p99) on each catalogue, and
how often the best-matching image was an extra one.

    .venv/bin/python bench/multiview_eval.py                       # 10k products, 1,000 queries
    .venv/bin/python bench/multiview_eval.py --catalogue 2000 --queries 200 --out /tmp/x.json
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time

import numpy as np
from tqdm import tqdm

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from machine import cpu_model  # noqa: E402
from scanner_eval import frames  # noqa: E402

STORED_SEEDS = (101, 102)   # the stored extra views (queries use --seed, never these)


def measure(client, labels, idx, queries: list[bytes], name: str) -> dict:
    top, search_us, extra = [], [], 0
    for q in tqdm(queries, desc=name, leave=False):
        r = client.search_full(image=q, top_k=10)
        top.append([int(h.product_id.rsplit("-", 1)[1]) for h in r.hits])
        search_us.append(r.timings.search_us)
        extra += bool(r.hits[0].image_id)
    top = np.asarray(top)
    hit1, hit10 = top[:, 0] == idx, (top == idx[:, None]).any(1)
    distinct = all(len(set(t)) == len(t) for t in top.tolist())
    return {"instance R@1": float(hit1.mean()), "instance R@10": float(hit10.mean()),
            "category R@1 of views": float((labels[top[:, 0]] == labels[idx]).mean()),
            "best image was an extra one": extra / len(queries), "hits distinct products": distinct,
            "search_us p50": float(np.percentile(search_us, 50)), "search_us p99": float(np.percentile(search_us, 99))}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model-repo", default="model_repo")
    ap.add_argument("--catalogue", type=int, default=10_000, help="test articles upserted (the first N)")
    ap.add_argument("--queries", type=int, default=1000)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--out", default="bench/multiview_eval.json")
    a = ap.parse_args(argv)
    from skulens import encode
    from skulens.client import Client, ingest
    from skulens.data import datasets
    from skulens.data.sources import png
    from skulens.server import Config, Server
    images, labels = datasets.load("test")
    images, labels = images[:a.catalogue], labels[:a.catalogue].astype(np.int64)
    encs = encode.load(a.model_repo)
    data = tempfile.mkdtemp(prefix="skulens-multiview-eval-")
    server = Server(Config(data=data, dim=encs["image"].dim, port=0, model_repo=a.model_repo), encoders=encs)
    res = {"command": "bench/multiview_eval.py " + " ".join(argv if argv is not None else sys.argv[1:]),
           "cpu": cpu_model(), "catalogue": a.catalogue, "queries": a.queries, "stored view seeds": STORED_SEEDS,
           "image encoder": encs["image"].name, "date": time.strftime("%Y-%m-%d")}
    idx = np.sort(np.random.default_rng(a.seed).choice(len(images), a.queries, replace=False))
    queries = {p: frames(images, idx, p, a.seed) for p in ("ours", "holdout")}
    everything = np.arange(len(images))

    def product(i, extra=None):
        p = dict(id=f"fmnist-test-{i:05d}", category=datasets.CATEGORY[labels[i]],
                 title=datasets.title(int(labels[i])), image=png(images[i]))
        if extra is not None:
            p["images"] = {f"view{j}": extra[j][i] for j in range(len(extra))}
        return p
    try:
        with Client(server.target, timeout=120) as c:
            ingest(c, (product(i) for i in range(len(images))), len(images), resume=False)
            for p, qs in queries.items():
                res[f"single image, {p} queries"] = measure(c, labels, idx, qs, f"single, {p}")
            views = [frames(images, everything, "ours", s) for s in tqdm(STORED_SEEDS, desc="stored views")]
            ingest(c, (product(i, views) for i in range(len(images))), len(images), resume=False)
            st = c.stats()
            res["images stored"] = st["images"]
            for p, qs in queries.items():
                res[f"clean + 2 views, {p} queries"] = measure(c, labels, idx, qs, f"multi, {p}")
    finally:
        server.stop()
    res["fusion rules (in process, the same frames)"] = fusion_rules(
        encs["image"], [png(im) for im in images], views, queries, idx)
    with open(a.out, "w") as f:
        json.dump(res, f, indent=1)
    print(table(res))
    return 0


def fusion_rules(enc, clean: list[bytes], views: list[list[bytes]], queries: dict, idx) -> dict:
    """R@1 / R@10 of other ways to score a product from its images' cosines, on the same frames:
    the served rule is max. (Listed for comparison; none is tuned on the holdout queries.)"""
    def emb(bs):
        return np.concatenate([enc.embed(bs[a:a + 256]) for a in range(0, len(bs), 256)])
    ref = [emb(clean)] + [emb(v) for v in tqdm(views, desc="fusion: embedding stored views", leave=False)]
    out = {}
    for p, qs in queries.items():
        s = np.stack([emb(qs) @ r.T for r in ref])      # [image, query, product]
        ext = s[1:].max(0)
        rules = {"main image only": s[0], "max (served)": s.max(0), "mean": s.mean(0),
                 "extra images only (max)": ext, "max, extra images - 0.05": np.maximum(s[0], ext - 0.05),
                 "(main + 0.5 max extra) / 1.5": (s[0] + 0.5 * ext) / 1.5}
        for name, sc in rules.items():
            top = np.argsort(-sc, axis=1)[:, :10]
            out[f"{p}: {name}"] = {"R@1": float((top[:, 0] == idx).mean()),
                                   "R@10": float((top == idx[:, None]).any(1).mean())}
    return out


def table(res: dict) -> str:
    rows = ["| catalogue | queries | instance R@1 | R@10 | category R@1 | best image extra | search p50 / p99 us |",
            "|---|---|---|---|---|---|---|"]
    for cat in ("single image", "clean + 2 views"):
        for p in ("ours", "holdout"):
            r = res[f"{cat}, {p} queries"]
            rows.append(f"| {cat} | {p} | {r['instance R@1']:.3f} | {r['instance R@10']:.3f} | "
                        f"{r['category R@1 of views']:.3f} | {r['best image was an extra one']:.2f} | "
                        f"{r['search_us p50']:.0f} / {r['search_us p99']:.0f} |")
    rows += ["", "| fusion rule (clean + 2 views) | R@1 | R@10 |", "|---|---|---|"]
    rows += [f"| {k} | {v['R@1']:.3f} | {v['R@10']:.3f} |"
             for k, v in res["fusion rules (in process, the same frames)"].items()]
    return "\n".join(rows)


if __name__ == "__main__":
    raise SystemExit(main())
