"""`skulens demo`, the README's main job: the Fashion-MNIST catalogue, a server, sample
scanner-view and title queries, a clean stop."""

from __future__ import annotations

import io
import os
import sys
import tempfile
import time


def _scanner_view():
    """The article as a scanner sees it (clutter, tilt, blur, noise, JPEG: skulens.data.views, on
    scikit-image's photos), else, without scikit-image, the article shifted and brightened."""
    import numpy as np
    from ..data.views import EVAL_BACKGROUNDS, Backgrounds, scanner_view
    try:
        bg = Backgrounds(EVAL_BACKGROUNDS)
        return lambda item, i: scanner_view(item, np.random.default_rng(i), 96, bg)
    except ImportError:
        return lambda item, i: (np.roll(item, 2, axis=1).astype("int16") + 20).clip(0, 255).astype("uint8")


def _jpeg(a) -> bytes:
    from PIL import Image
    buf = io.BytesIO()
    Image.fromarray(a).save(buf, "JPEG", quality=90)
    return buf.getvalue()


def _scene(c, args) -> None:
    """A shelf scene composed of catalogue articles (skulens.data.scenes): every product in one picture."""
    from ..data import datasets
    from ..data.scenes import SceneMaker
    from .query import contact_sheet, print_regions
    images, _ = datasets.load("train")
    try:
        scene = SceneMaker(images[:min(args.limit or 60_000, 60_000)], seed=args.seed)(0)
    except FileNotFoundError as e:   # opencv-doc's clutter photos
        print(f"\nno shelf-scene query: {e}")
        return
    r = c.search_scene(scene.jpeg, top_k=3, include_metadata=True)
    shown = ", ".join(f"fmnist-train-{i:05d}" for i in scene.items)
    print(f"\nquery: a shelf scene of {len(scene.items)} articles ({shown}), 640 x 480")
    print_regions(r)
    if args.sheet:
        contact_sheet(args.sheet, scene.jpeg, [g.hits[0] for g in r.regions], c,
                      [((g.box.x0, g.box.y0, g.box.x1, g.box.y1), g.objectness, g.hits[0]) for g in r.regions])


def cmd_demo(args) -> int:
    """Fashion-MNIST catalogue -> server -> sample image queries -> clean stop."""
    from .. import encode
    from ..client import Client, ingest
    from ..data import datasets
    from ..data.sources import fashion_products
    from ..server import Config, Server
    from .query import print_hits
    if not datasets.available():
        print("Fashion-MNIST is missing: apt-get install dataset-fashion-mnist", file=sys.stderr)
        return 1
    encs = encode.load(args.model_repo)
    if "image" not in encs:
        print(f"no image encoder in {args.model_repo}: run `make models`", file=sys.stderr)
        return 1
    data = args.data or os.path.join(tempfile.gettempdir(), "skulens-demo")
    cfg = Config(data=data, dim=encs["image"].dim, port=0, model_repo=args.model_repo)
    t0 = time.perf_counter()
    server = Server(cfg, encoders=encs)
    print(f"server up on {server.target} in {time.perf_counter() - t0:.1f} s "
          f"(catalogue {data}: {len(server.catalog)} products)")
    try:
        with Client(server.target, timeout=120) as c:
            ingest(c, fashion_products(args.limit), args.limit or 70_000)
            print(f"catalogue: {c.stats()['products']} products")
            images, labels = datasets.load("test")
            rng = __import__("numpy").random.default_rng(args.seed)
            view = _scanner_view()
            for i in rng.choice(len(images), size=args.queries, replace=False):
                q = _jpeg(view(images[i], int(i)))
                r = c.search_full(image=q, top_k=5, include_metadata=True)
                print(f"\nquery: a scanner view of test article fmnist-test-{i:05d} ({datasets.CLASSES[labels[i]]})")
                print_hits(r)
            if "text" in encs:
                text = "ankle boot"
                r = c.search_full(text=text, top_k=5, include_metadata=True)
                how = "in the image space" if encs["text"].dim == encs["image"].dim else "against the titles"
                print(f"\nquery: the text {text!r} (searched {how})")
                print_hits(r)
            _scene(c, args)
    finally:
        server.stop()
        print("\nserver stopped cleanly")
    return 0
