"""Product sources: what `skulens ingest` upserts and what training reads, one reader each.

Each yields products as dicts (id, sku, title, category, attributes, image bytes).
"""

from __future__ import annotations

import csv
import io
import json
import os

from . import datasets


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
