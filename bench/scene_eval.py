"""Scene search (SearchScene), measured through gRPC: synthetic shelf scenes (skulens.data.scenes: 2-6
Fashion-MNIST test articles on opencv-doc clutter, 640 x 480) against a catalogue of the first N test
articles plus a few real opencv-doc photos; and the real photo box_in_scene.png with box.png upserted.

An article is found when a returned region overlaps its box by IoU >= 0.5 and holds it in its top 10.
Per stage: decode, propose (selective search), encode (every candidate region in one batch), search.

    .venv/bin/python bench/scene_eval.py                 # catalogues of 2,000 and 10,000, 200 scenes
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

PHOTOS = ("box.png", "graf3.png", "chicky_512.png", "pic1.png", "smarties.png", "orange.jpg", "blox.jpg",
          "Blender_Suzanne1.jpg", "ml.png", "notes.png")


def run(catalogue: int, scenes: int, model_repo: str, seed: int) -> dict:
    from skulens import encode
    from skulens.client import Client
    from skulens.data import datasets
    from skulens.data.holdout import OPENCV_DATA
    from skulens.data.scenes import SceneMaker, iou
    from skulens.data.sources import png
    from skulens.server import Config, Server
    images, labels = datasets.load("test")
    images = images[:catalogue]
    encs = encode.load(model_repo)
    server = Server(Config(data=tempfile.mkdtemp(prefix="skulens-scenes-"), dim=encs["image"].dim, port=0,
                           model_repo=model_repo), encoders=encs)
    res = {"catalogue": catalogue, "scenes": scenes}
    try:
        with Client(server.target, timeout=120) as c:
            for a in tqdm(range(0, catalogue, 500), desc=f"catalogue {catalogue}", leave=False):
                c.upsert([dict(id=f"t{i}", image=png(images[i])) for i in range(a, min(a + 500, catalogue))])
            c.upsert([dict(id=p.split(".")[0], image=open(f"{OPENCV_DATA}/{p}", "rb").read()) for p in PHOTOS])
            maker = SceneMaker(images, seed=seed)
            found = total = 0
            stages, wall, per_scene = [], [], []
            for k in tqdm(range(scenes), desc="scenes", leave=False):
                s = maker(k)
                t0 = time.perf_counter()
                r = c.search_scene(s.jpeg, top_k=10)
                wall.append(time.perf_counter() - t0)
                t = r.timings
                stages.append((t.decode_us, t.propose_us, t.encode_us, t.search_us, t.total_us, r.candidates))
                b = np.array([[g.box.x0, g.box.y0, g.box.x1, g.box.y1] for g in r.regions]).reshape(-1, 4)
                hit = [any(iou(gt[None], bb[None])[0, 0] >= 0.5 and f"t{it}" in [h.product_id for h in g.hits]
                           for g, bb in zip(r.regions, b)) for gt, it in zip(s.boxes, s.items)]
                found, total = found + sum(hit), total + len(hit)
                per_scene.append(len(r.regions))
            med = np.median(np.array(stages), 0)
            res.update({"articles found": found / total, "articles": total,
                        "regions returned (median)": float(np.median(per_scene)),
                        "ms p50": {k: float(v) / 1e3 for k, v in
                                   zip(("decode", "propose", "encode", "search", "server total"), med[:5])},
                        "candidates embedded (median)": float(med[5]),
                        "client wall ms p50": float(np.median(wall) * 1e3)})
            real = open(f"{OPENCV_DATA}/box_in_scene.png", "rb").read()
            for name, kw in (("default", {}), ("all regions", dict(max_regions=32, min_objectness=-1.0))):
                r = c.search_scene(real, top_k=3, **kw)
                ranks = [i for i, g in enumerate(r.regions) if "box" in [h.product_id for h in g.hits]]
                res[f"box_in_scene: region holding box in its top 3 ({name})"] = ranks[0] + 1 if ranks else None
    finally:
        server.stop()
    return res


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--catalogues", default="2000,10000")
    ap.add_argument("--scenes", type=int, default=200)
    ap.add_argument("--model-repo", default="model_repo")
    ap.add_argument("--seed", type=int, default=2026)
    ap.add_argument("--out", default="bench/scene_eval.json")
    a = ap.parse_args(argv)
    out = {"command": "bench/scene_eval.py " + " ".join(argv if argv is not None else sys.argv[1:]),
           "cpu": cpu_model(), "date": time.strftime("%Y-%m-%d"),
           "runs": [run(int(n), a.scenes, a.model_repo, a.seed) for n in a.catalogues.split(",")]}
    with open(a.out, "w") as f:
        json.dump(out, f, indent=1)
    print(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
