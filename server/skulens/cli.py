"""The `skulens` command: serve, search, upsert, ingest, stats, and the demo.

    skulens serve --data data --port 50051 --model-repo model_repo [--triton start|HOST:PORT]
    skulens search --image shoe.jpg --top-k 5 [--filter "category=sneakers"] [--sheet out.png]
    skulens upsert --id sku-1 --image shoe.jpg --title "red sneaker" --category sneakers --attr color=red
    skulens ingest --fashion-mnist            # or: --folder imgs/ --meta products.jsonl
    skulens stats
    skulens loadgen -d @req.json -c 16 -n 10000 -o report.json
    skulens demo                              # the README's main job
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import logging
import os
import sys
import tempfile
import time

DEFAULT_TARGET = "127.0.0.1:50051"


def _client(args):
    from .client import Client
    return Client(args.target, timeout=args.timeout)


def _png(a) -> bytes:
    from PIL import Image
    b = io.BytesIO()
    Image.fromarray(a).save(b, "PNG")
    return b.getvalue()


# --- serve -------------------------------------------------------------------------
def cmd_serve(args) -> int:
    from . import encoders
    from .server import Config, Server
    cfg = Config.load(args.config, data=args.data, port=args.port, host=args.host, model_repo=args.model_repo,
                      dim=args.dim, triton=args.triton)
    from .triton import TritonServer, TritonUnavailable
    triton = None
    try:
        if cfg.triton == "start":
            if not cfg.model_repo:
                raise TritonUnavailable("--triton start needs --model-repo")
            triton = TritonServer(cfg.model_repo).start()
            print(f"Triton serving {', '.join(triton.models)} on {triton.url}", flush=True)
        encs = encoders.load(cfg.model_repo, triton=triton.url if triton else cfg.triton or None) \
            if cfg.model_repo else {}
    except (TritonUnavailable, ConnectionError, FileNotFoundError) as e:
        # The encoders' runtime cannot be had: say why in one line, nothing started.
        if triton is not None:
            triton.stop()
        print(f"skulens serve: {e}", file=sys.stderr)
        return 2
    try:
        if "image" in encs and args.dim is None and cfg.dim != encs["image"].dim:
            cfg.dim = encs["image"].dim
        s = Server(cfg, encoders=encs)
        runtime = f"Triton at {triton.url if triton else cfg.triton}" if cfg.triton else "ONNX Runtime"
        print(f"skulens serving on {s.target} ({len(s.catalog)} products, encoders: {sorted(encs) or 'none'} "
              f"on {runtime})", flush=True)
        s.wait()
    finally:
        if triton is not None:
            triton.stop()
    return 0


# --- search ------------------------------------------------------------------------
def cmd_search(args) -> int:
    kw = _image_or_vector(args)
    if args.text:
        kw = {"text": args.text}
    elif args.product_id:
        kw = {"product_id": args.product_id}
    if not kw:
        print("give --image, --text, --product-id or --vector", file=sys.stderr)
        return 2
    with _client(args) as c:
        r = c.search_full(top_k=args.top_k, filters=args.filter, mode=args.mode, include_metadata=True, **kw)
        print_hits(r)
        if args.sheet:
            contact_sheet(args.sheet, kw.get("image"), r.hits, args.data)
    return 0


def _image_or_vector(args) -> dict:
    """{"image": bytes} or {"vector": floats} from --image / --vector, or {}."""
    if args.image:
        with open(args.image, "rb") as f:
            return {"image": f.read()}
    if args.vector:
        return {"vector": [float(x) for x in args.vector.split(",")]}
    return {}


def print_hits(r) -> None:
    for i, h in enumerate(r.hits, 1):
        print(f"  {i}. {h.product_id:<14} {h.score:.4f}  {h.title}  [{h.category}]")
    t = r.timings
    print(f"  server: total {t.total_us} us (decode {t.decode_us}, preprocess {t.preprocess_us}, "
          f"encode {t.encode_us}, search {t.search_us}){' cache hit' if t.cache_hit else ''}")


def contact_sheet(path: str, query: bytes | None, hits, data: str | None) -> None:
    """The query beside its hits' reference thumbnails (read from the catalogue folder)."""
    from PIL import Image, ImageDraw
    from .store import Store
    side = 128
    sheet = Image.new("RGB", (side * (len(hits) + 1), side + 28), "white")
    draw = ImageDraw.Draw(sheet)
    if query:
        q = Image.open(io.BytesIO(query)).convert("RGB")
        q.thumbnail((side, side))
        sheet.paste(q, (0, 0))
        draw.text((4, side + 6), "query", fill="black")
    store = Store(os.path.join(data, "catalog.db"), _db_dim(data)) if data else None
    for i, h in enumerate(hits, 1):
        t = store.thumbnail(h.product_id) if store else None
        if t:
            im = Image.open(io.BytesIO(t)).convert("RGB")
            im.thumbnail((side, side))
            sheet.paste(im, (i * side, 0))
        draw.text((i * side + 4, side + 6), f"{h.product_id} {h.score:.3f}", fill="black")
    sheet.save(path)
    print(f"  wrote {path}")


def _db_dim(data: str) -> int:
    import sqlite3
    with sqlite3.connect(os.path.join(data, "catalog.db")) as c:
        return int(c.execute("SELECT value FROM meta WHERE key = 'dim'").fetchone()[0])


# --- ingest ------------------------------------------------------------------------
def fashion_products(limit: int | None = None):
    """The 70,000 Fashion-MNIST articles as products: image, category, honest title."""
    from . import datasets
    n = 0
    for split in ("train", "test"):
        images, labels = datasets.load(split)
        for i, (im, lab) in enumerate(zip(images, labels)):
            if limit is not None and n >= limit:
                return
            yield dict(id=f"fmnist-{split}-{i:05d}", sku=f"FM{split[0].upper()}{i:05d}", title=datasets.title(lab),
                       category=datasets.CATEGORY[lab], attributes={"split": split}, image=_png(im))
            n += 1


def folder_products(folder: str, meta: str):
    """A folder of images plus CSV/JSONL rows (id, sku, title, category, attributes, image)."""
    rows = []
    with open(meta, newline="") as f:
        if meta.endswith(".jsonl"):
            rows = [json.loads(line) for line in f if line.strip()]
        else:
            rows = list(csv.DictReader(f))
    for r in rows:
        attrs = r.get("attributes") or {}
        if isinstance(attrs, str):
            attrs = json.loads(attrs) if attrs.strip() else {}
        name = r.get("image") or f"{r['id']}.jpg"
        with open(os.path.join(folder, name), "rb") as img:
            yield dict(id=r["id"], sku=r.get("sku", ""), title=r.get("title", ""), category=r.get("category", ""),
                       attributes=attrs, image=img.read())


def ingest(client, products, total: int | None, batch: int = 64, resume: bool = True) -> int:
    """Upsert in batches with a progress bar; with resume, products already there are skipped."""
    from tqdm import tqdm
    import grpc
    sent = 0
    buf = []
    bar = tqdm(total=total, desc="ingesting", unit="product", smoothing=0.05)

    def flush():
        nonlocal sent, buf
        if resume:
            keep = []
            for p in buf:
                try:
                    client.get(p["id"])
                except grpc.RpcError as e:
                    if e.code() != grpc.StatusCode.NOT_FOUND:
                        raise
                    keep.append(p)
            skipped = len(buf) - len(keep)
            buf = keep
        else:
            skipped = 0
        if buf:
            client.upsert(buf)
        sent += len(buf)
        bar.update(len(buf) + skipped)
        buf = []

    for p in products:
        buf.append(p)
        if len(buf) >= batch:
            flush()
    flush()
    bar.close()
    return sent


def cmd_ingest(args) -> int:
    with _client(args) as c:
        if args.fashion_mnist:
            n = ingest(c, fashion_products(args.limit), args.limit or 70_000, resume=not args.no_resume)
        else:
            n = ingest(c, folder_products(args.folder, args.meta), None, resume=not args.no_resume)
        print(f"ingested {n} products; the catalogue holds {c.stats()['products']}")
    return 0


def cmd_upsert(args) -> int:
    attrs = {}
    for kv in args.attr or []:
        if "=" not in kv:
            print(f"--attr takes key=value, got {kv!r}", file=sys.stderr)
            return 2
        k, v = kv.split("=", 1)
        attrs[k] = v
    given = _image_or_vector(args)
    if not given:
        print("give --image or --vector", file=sys.stderr)
        return 2
    p = dict(id=args.id, sku=args.sku or "", title=args.title or "", category=args.category or "", attributes=attrs,
             **given)
    with _client(args) as c:
        r = c.upsert([p])
    print(f"upserted {args.id} (seq {r.seq})")
    return 0


def cmd_loadgen(args) -> int:
    from . import loadgen
    return loadgen.main_args(args)


def cmd_stats(args) -> int:
    with _client(args) as c:
        print(json.dumps(c.stats(), indent=1))
    return 0


# --- the demo (README's main job) ----------------------------------------------------
def _scanner_view():
    """The article as a scanner sees it: skulens_train's views (clutter, tilt, blur, noise, JPEG)
    when installed, else the article shifted and brightened."""
    import numpy as np
    try:
        from skulens_train.views import EVAL_BACKGROUNDS, Backgrounds, scanner_view
        bg = Backgrounds(EVAL_BACKGROUNDS)
        return lambda item, i: scanner_view(item, np.random.default_rng(i), 96, bg)
    except ImportError:
        return lambda item, i: (np.roll(item, 2, axis=1).astype("int16") + 20).clip(0, 255).astype("uint8")


def _jpeg(a) -> bytes:
    from PIL import Image
    buf = io.BytesIO()
    Image.fromarray(a).save(buf, "JPEG", quality=90)
    return buf.getvalue()


def cmd_demo(args) -> int:
    """Fashion-MNIST catalogue -> server -> sample image queries -> clean stop."""
    from . import datasets, encoders
    from .client import Client
    from .server import Config, Server
    if not datasets.available():
        print("Fashion-MNIST is missing: apt-get install dataset-fashion-mnist", file=sys.stderr)
        return 1
    encs = encoders.load(args.model_repo)
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
    finally:
        server.stop()
        print("\nserver stopped cleanly")
    return 0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="skulens", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--target", default=os.environ.get("SKULENS_TARGET", DEFAULT_TARGET))
    ap.add_argument("--timeout", type=float, default=30.0)
    sub = ap.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("serve", help="run the gRPC server")
    s.add_argument("--config")
    s.add_argument("--data")
    s.add_argument("--port", type=int)
    s.add_argument("--host")
    s.add_argument("--dim", type=int)
    s.add_argument("--model-repo", dest="model_repo")
    s.add_argument("--triton", help="run the encoders on Triton: host:port of its gRPC, or 'start' to start "
                                    "one on --model-repo (needs `make triton`); default: ONNX Runtime in process")
    s = sub.add_parser("search", help="query a running server")
    s.add_argument("--image")
    s.add_argument("--text")
    s.add_argument("--product-id")
    s.add_argument("--vector", help="comma-separated floats")
    s.add_argument("--top-k", type=int, default=5)
    s.add_argument("--filter")
    s.add_argument("--mode", default="auto", choices=["auto", "exact", "ann"])
    s.add_argument("--sheet", help="write the query beside its hits' thumbnails to this PNG")
    s.add_argument("--data", help="catalogue folder (for --sheet thumbnails)")
    s = sub.add_parser("upsert", help="insert or replace one product")
    s.add_argument("--id", required=True)
    s.add_argument("--image")
    s.add_argument("--vector", help="comma-separated floats")
    s.add_argument("--sku")
    s.add_argument("--title")
    s.add_argument("--category")
    s.add_argument("--attr", action="append", help="key=value (repeatable)")
    s = sub.add_parser("ingest", help="upsert a folder of images + CSV/JSONL, or Fashion-MNIST")
    s.add_argument("--fashion-mnist", action="store_true")
    s.add_argument("--folder")
    s.add_argument("--meta", help="CSV or JSONL: id, sku, title, category, attributes, image")
    s.add_argument("--limit", type=int)
    s.add_argument("--no-resume", action="store_true")
    sub.add_parser("stats", help="catalogue and server statistics")
    s = sub.add_parser("loadgen", help="ghz-style load generator with a ghz-compatible JSON report")
    s.add_argument("--call", default="Search", help="Search, GetProduct, Stats or Embed")
    s.add_argument("-d", "--data", required=True, help="the request as JSON, or @file")
    s.add_argument("-c", "--concurrency", type=int, default=1)
    s.add_argument("-n", "--total", type=int, default=None)
    s.add_argument("-z", "--duration", help="e.g. 30s, 2m (with -n: whichever ends first)")
    s.add_argument("--rps", type=float, help="constant request rate")
    s.add_argument("--connections", type=int, default=1)
    s.add_argument("-m", "--metadata", help="gRPC metadata as a JSON object")
    s.add_argument("-o", "--output", help="write the JSON report here")
    s = sub.add_parser("demo", help="the main job: Fashion-MNIST catalogue, server, sample queries")
    s.add_argument("--model-repo", default="model_repo")
    s.add_argument("--data")
    s.add_argument("--limit", type=int, help="ingest only this many articles (default: all 70,000)")
    s.add_argument("--queries", type=int, default=3)
    s.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    if args.cmd == "loadgen" and args.total is None and args.duration is None:
        args.total = 200
    return {"serve": cmd_serve, "search": cmd_search, "ingest": cmd_ingest, "stats": cmd_stats,
            "demo": cmd_demo, "loadgen": cmd_loadgen, "upsert": cmd_upsert}[args.cmd](args)


if __name__ == "__main__":
    sys.exit(main())
