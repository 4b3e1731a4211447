"""The commands that talk to a running server: search, upsert, ingest, stats, loadgen."""

from __future__ import annotations

import io
import json
import sys

from ..client import Client, ingest
from ..data.sources import fashion_products, folder_products


def client(args) -> Client:
    return Client(args.target, timeout=args.timeout, api_key=args.api_key, tls_ca=args.tls_ca,
                  tls_cert=args.tls_cert, tls_key=args.tls_key)


def cmd_search(args) -> int:
    kw = _image_or_vector(args)
    if args.text:
        kw = {"text": args.text}
    elif args.product_id:
        kw = {"product_id": args.product_id}
    if not kw:
        print("give --image, --text, --product-id or --vector", file=sys.stderr)
        return 2
    if args.scene:
        return _scene(args, kw)
    with client(args) as c:
        r = c.search_full(top_k=args.top_k, filters=args.filter, mode=args.mode, include_metadata=True, **kw)
        print_hits(r)
        if args.sheet:
            contact_sheet(args.sheet, kw.get("image"), r.hits, c)
    return 0


def _scene(args, kw) -> int:
    if "image" not in kw:
        print("--scene needs --image", file=sys.stderr)
        return 2
    with client(args) as c:
        r = c.search_scene(kw["image"], top_k=args.top_k, filters=args.filter, include_metadata=True)
        print_regions(r)
        if args.sheet:
            contact_sheet(args.sheet, kw["image"], [g.hits[0] for g in r.regions], c,
                          [((g.box.x0, g.box.y0, g.box.x1, g.box.y1), g.objectness, g.hits[0]) for g in r.regions])
    return 0


def print_regions(r) -> None:
    for i, g in enumerate(r.regions, 1):
        b = g.box
        best = ", ".join(f"{h.product_id} {h.score:.3f}" for h in g.hits[:3])
        print(f"  region {i}: box ({b.x0}, {b.y0})-({b.x1}, {b.y1}) objectness {g.objectness:.3f}: {best}")
    t = r.timings
    print(f"  server: total {t.total_us} us (decode {t.decode_us}, propose {t.propose_us}, encode {t.encode_us} "
          f"for {r.candidates} candidate regions, search {t.search_us})")


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
        via = f"  (image {h.image_id})" if h.image_id else ""
        print(f"  {i}. {h.product_id:<14} {h.score:.4f}  {h.title}  [{h.category}]{via}")
    t = r.timings
    print(f"  server: total {t.total_us} us (decode {t.decode_us}, preprocess {t.preprocess_us}, "
          f"encode {t.encode_us}, search {t.search_us}){' cache hit' if t.cache_hit else ''}")


def contact_sheet(path: str, query: bytes | None, hits, client, regions=()) -> None:
    """The query beside its hits' reference thumbnails (fetched through the API): cli/sheet.py."""
    from .sheet import draw_sheet
    draw_sheet(path, query, hits, client.thumbnail, regions)
    print(f"  wrote {path}")


def cmd_ingest(args) -> int:
    with client(args) as c:
        if args.fashion_mnist:
            n = ingest(c, fashion_products(args.limit), args.limit or 70_000, resume=not args.no_resume)
        elif args.folder and args.meta:
            n = ingest(c, folder_products(args.folder, args.meta), None, resume=not args.no_resume)
        else:
            print("give --fashion-mnist, or --folder with --meta", file=sys.stderr)
            return 2
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
    images = _named_images(args.also or [])
    if images is None:
        return 2
    p = dict(id=args.id, sku=args.sku or "", title=args.title or "", category=args.category or "", attributes=attrs,
             images=images, **given)
    with client(args) as c:
        r = c.upsert([p])
    print(f"upserted {args.id} (seq {r.seq})")
    return 0


def _named_images(specs: list[str]) -> dict | None:
    """NAME=PATH arguments as {name: image bytes} (None after saying what is wrong)."""
    out = {}
    for spec in specs:
        name, sep, path = spec.partition("=")
        if not sep or not name or not path:
            print(f"images are given as NAME=PATH (e.g. back=back.jpg), got {spec!r}", file=sys.stderr)
            return None
        with open(path, "rb") as f:
            out[name] = f.read()
    return out


def cmd_images(args) -> int:
    """skulens images add --id X NAME=PATH... / images remove --id X NAME..."""
    with client(args) as c:
        if args.action == "add":
            images = _named_images(args.items)
            if images is None:
                return 2
            r = c.add_images(args.id, images)
        else:
            r = c.remove_images(args.id, args.items)
    print(f"{args.id}: {args.action} changed {r.changed} image(s); it holds {r.images} (seq {r.seq})")
    return 0


def cmd_loadgen(args) -> int:
    from ..client import loadgen
    return loadgen.main_args(args)


def cmd_stats(args) -> int:
    with client(args) as c:
        print(json.dumps(c.stats(), indent=1))
    return 0
