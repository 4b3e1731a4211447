"""Product sources: what `skulens ingest` upserts and what training reads, one reader each.

Each yields products as dicts (id, sku, title, category, attributes, image bytes).
"""

from __future__ import annotations

import csv
import io
import json
import os

import numpy as np

from . import datasets

OPENCV_DATA = "/usr/share/doc/opencv-doc/examples/data"   # Debian's opencv-doc: real photos


def png(a) -> bytes:
    from PIL import Image
    b = io.BytesIO()
    Image.fromarray(a).save(b, "PNG")
    return b.getvalue()


def fashion_products(limit: int | None = None):
    """The 70,000 Fashion-MNIST articles as products: image, category, honest title."""
    n = 0
    for split in ("train", "test"):
        images, labels = datasets.load(split)
        for i, (im, lab) in enumerate(zip(images, labels)):
            if limit is not None and n >= limit:
                return
            yield dict(id=f"fmnist-{split}-{i:05d}", sku=f"FM{split[0].upper()}{i:05d}", title=datasets.title(lab),
                       category=datasets.CATEGORY[lab], attributes={"split": split}, image=png(im))
            n += 1


def folder_products(folder: str, meta: str):
    """A folder of images plus CSV/JSONL rows (id, sku, title, category, attributes, image). A
    product photographed several times lists its files in `image` (CSV: separated by ';'; JSONL:
    a list): the first is its main image, the others are named by their file's stem."""
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
        names = r.get("image") or f"{r['id']}.jpg"
        names = [n.strip() for n in names.split(";") if n.strip()] if isinstance(names, str) else list(names)
        files = [_read(os.path.join(folder, n)) for n in names]
        extra = {}
        for n, data in zip(names[1:], files[1:]):
            stem = os.path.splitext(os.path.basename(n))[0]
            extra[stem if stem not in extra else f"{stem}-{len(extra)}"] = data
        yield dict(id=r["id"], sku=r.get("sku", ""), title=r.get("title", ""), category=r.get("category", ""),
                   attributes=attrs, image=files[0], images=extra)


def _read(path: str) -> bytes:
    with open(path, "rb") as f:
        return f.read()


def photos(names, folder: str = OPENCV_DATA) -> list[np.ndarray]:
    """opencv-doc photos as float32 RGB in 0..1; a clear error when opencv-doc is missing."""
    from PIL import Image
    paths = [os.path.join(folder, n) for n in names]
    missing = [p for p in paths if not os.path.exists(p)]
    if missing:   # a protocol is its photos exactly: a partial set would be another protocol
        raise FileNotFoundError(f"{len(missing)} photos missing from {folder} (e.g. {missing[0]}): "
                                "install Debian's opencv-doc (make deps)")
    return [np.asarray(Image.open(p).convert("RGB"), np.float32) / 255.0 for p in paths]
