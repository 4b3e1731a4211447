"""Scanner-grade accuracy, measured from outside: the Fashion-MNIST test articles upserted as a catalogue
through gRPC (the server embeds their images), then scanner frames of some of them sent through
`Search` as JPEG bytes, on both view protocols:

  ours     skulens.data.views (the protocol the encoders are trained on; held-out clutter photos),
           96 px frames, JPEG q90 on the wire, as the demo sends them;
  holdout  skulens.data.holdout (independent generator and ranges, opencv-doc clutter, 80-128 px),
           which no training or tuning touches.

Reports instance R@1/R@10, category R@1 of the views, instance R@1 per class, clean category R@1
(search by product id), and text precision@10 for every category name and common synonyms.

    .venv/bin/python bench/scanner_eval.py                       # 10k catalogue, 1,000 queries
    .venv/bin/python bench/scanner_eval.py --catalogue 2000 --queries 200 --out /tmp/x.json
"""

from __future__ import annotations

import argparse
import io
import json
import os
import sys
import tempfile
import time

import numpy as np
from tqdm import tqdm

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from machine import cpu_model  # noqa: E402

# Text queries: every category name as the catalogue spells it, plus what shoppers type.
TEXT_QUERIES = {
    "T-shirt/top": ["T-shirt/top", "t-shirt", "a photo of a t-shirt", "tee"],
    "Trouser": ["Trouser", "a photo of a trouser", "trousers", "pants", "jeans"],
    "Pullover": ["Pullover", "a photo of a pullover", "sweater", "jumper"],
    "Dress": ["Dress", "a photo of a dress", "summer dress"],
    "Coat": ["Coat", "a photo of a coat", "jacket"],
    "Sandal": ["Sandal", "a photo of a sandal", "sandals"],
    "Shirt": ["Shirt", "a photo of a shirt", "blouse"],
    "Sneaker": ["Sneaker", "a photo of a sneaker", "sneakers", "running shoe"],
    "Bag": ["Bag", "a photo of a bag", "handbag", "purse"],
    "Ankle boot": ["Ankle boot", "a photo of an ankle boot", "boots"],
}


def _jpeg(a: np.ndarray, quality: int = 90) -> bytes:
    from PIL import Image
    buf = io.BytesIO()
    Image.fromarray(a).save(buf, "JPEG", quality=quality)
    return buf.getvalue()


def frames(images: np.ndarray, idx: np.ndarray, protocol: str, seed: int) -> list[bytes]:
    if protocol == "ours":
        from skulens.data.views import EVAL_BACKGROUNDS, Backgrounds, scanner_view
        bg = Backgrounds(EVAL_BACKGROUNDS)
        return [_jpeg(scanner_view(images[i], np.random.default_rng((seed, int(i))), 96, bg)) for i in idx]
    from skulens.data.holdout import HoldoutViews
    return HoldoutViews(images, seed=seed)(idx)


def measure(client, images, labels, classes, idx, protocol: str, seed: int) -> dict:
    qs = frames(images, idx, protocol, seed)
    top = []
    for q in tqdm(qs, desc=f"{protocol} views", leave=False):
        top.append([int(h.product_id.rsplit("-", 1)[1]) for h in client.search(image=q, top_k=10)])
    top = np.asarray(top)
    hit1, hit10 = top[:, 0] == idx, (top == idx[:, None]).any(1)
    res = {"instance R@1": float(hit1.mean()), "instance R@10": float(hit10.mean()),
           "category R@1 of views": float((labels[top[:, 0]] == labels[idx]).mean()),
           "instance R@1 per class": {classes[c]: float(hit1[labels[idx] == c].mean()) for c in range(len(classes))},
           "frame bytes (mean)": float(np.mean([len(q) for q in qs]))}
    return res


def text_precision(client, labels, categories) -> dict:
    out = {}
    for cat, queries in TEXT_QUERIES.items():
        for q in queries:
            hits = client.search(text=q, top_k=10)
            c = categories.index(cat)
            out[q] = float(np.mean([labels[int(h.product_id.rsplit("-", 1)[1])] == c for h in hits]))
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model-repo", default="model_repo")
    ap.add_argument("--catalogue", type=int, default=10_000, help="test articles upserted (the first N)")
    ap.add_argument("--queries", type=int, default=1000)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--out", default="bench/scanner_eval.json")
    a = ap.parse_args(argv)
    from skulens import encode
    from skulens.client import Client, ingest
    from skulens.data import datasets
    from skulens.data.sources import png
    from skulens.server import Config, Server
    images, labels = datasets.load("test")
    images, labels = images[:a.catalogue], labels[:a.catalogue].astype(np.int64)
    encs = encode.load(a.model_repo)
    data = tempfile.mkdtemp(prefix="skulens-scanner-eval-")
    server = Server(Config(data=data, dim=encs["image"].dim, port=0, model_repo=a.model_repo), encoders=encs)
    res = {"command": "bench/scanner_eval.py " + " ".join(argv if argv is not None else sys.argv[1:]),
           "cpu": cpu_model(), "catalogue": a.catalogue, "queries": a.queries,
           "image encoder": encs["image"].name, "date": time.strftime("%Y-%m-%d")}
    try:
        with Client(server.target, timeout=120) as c:
            ingest(c, (dict(id=f"fmnist-test-{i:05d}", category=datasets.CATEGORY[labels[i]],
                            title=datasets.title(int(labels[i])), image=png(images[i])) for i in range(len(images))),
                   len(images), resume=False)
            idx = np.sort(np.random.default_rng(a.seed).choice(len(images), a.queries, replace=False))
            for protocol in ("ours", "holdout"):
                res[protocol] = measure(c, images, labels, datasets.CLASSES, idx, protocol, a.seed)
            clean = [int(c.search(product_id=f"fmnist-test-{i:05d}", top_k=1)[0].product_id.rsplit("-", 1)[1])
                     for i in tqdm(idx, desc="by product id", leave=False)]
            res["clean category R@1 (search by product id)"] = float((labels[clean] == labels[idx]).mean())
            if "text" in encs:
                res["text precision@10"] = text_precision(c, labels, list(datasets.CLASSES))
    finally:
        server.stop()
    with open(a.out, "w") as f:
        json.dump(res, f, indent=1)
    print(table(res))
    return 0


def table(res: dict) -> str:
    rows = ["| measure | ours (skulens.data.views) | holdout (skulens.data.holdout) |", "|---|---|---|"]
    for k in ("instance R@1", "instance R@10", "category R@1 of views"):
        rows.append(f"| {k} | {res['ours'][k]:.3f} | {res['holdout'][k]:.3f} |")
    rows.append(f"| clean category R@1 (by product id) | {res['clean category R@1 (search by product id)']:.3f} | |")
    for c, v in res["ours"]["instance R@1 per class"].items():
        rows.append(f"| instance R@1, {c} | {v:.3f} | {res['holdout']['instance R@1 per class'][c]:.3f} |")
    if "text precision@10" in res:
        bad = {q: p for q, p in res["text precision@10"].items() if p < 0.5}
        rows.append(f"\ntext precision@10: mean {np.mean(list(res['text precision@10'].values())):.3f} over "
                    f"{len(res['text precision@10'])} queries; below 0.5: {bad or 'none'}")
    return "\n".join(rows)


if __name__ == "__main__":
    raise SystemExit(main())
