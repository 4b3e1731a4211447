"""Training and evaluation data: Fashion-MNIST (Debian's dataset-fashion-mnist) or a user's
catalogue folder in the format `skulens ingest` reads (images + CSV/JSONL of id, sku, title,
category, attributes)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class Items:
    """Products as the model sees them: raw items (for scanner views), catalogue pictures at the
    model's input size, category indices and names."""
    raw: list | np.ndarray          # uint8 [h, w] (grey article on black) or [h, w, 3] photos
    clean: np.ndarray               # uint8 [N, S, S, 3]
    labels: np.ndarray              # int64 [N]
    categories: list[str]
    titles: list[str]

    def __len__(self):
        return len(self.labels)

    def subset(self, idx) -> "Items":
        idx = np.asarray(idx)
        raw = self.raw[idx] if isinstance(self.raw, np.ndarray) else [self.raw[i] for i in idx]
        return Items(raw, self.clean[idx], self.labels[idx], self.categories, [self.titles[i] for i in idx])


def _render(raw, size: int) -> np.ndarray:
    from skulens.data.views import catalogue_image
    out = np.empty((len(raw), size, size, 3), np.uint8)
    for i, r in enumerate(raw):
        out[i] = catalogue_image(r, size)
    return out


def fashion_mnist(split: str, size: int, limit: int = 0, classes=()) -> Items:
    from skulens.data import datasets
    images, labels = datasets.load(split)
    keep = np.arange(len(labels))
    if classes:
        keep = keep[np.isin(labels, list(classes))]
    if limit:
        keep = keep[:limit]
    images, labels = images[keep], labels[keep].astype(np.int64)
    return Items(images, _render(images, size), labels, list(datasets.CATEGORY),
                 [datasets.title(int(c)) for c in labels])


def folder(path: str, meta: str, size: int) -> Items:
    """A user's catalogue: every product image becomes one item; categories are indexed as found."""
    import io
    from PIL import Image
    from skulens.data.sources import folder_products
    raw, cats, labels, titles = [], [], [], []
    for p in folder_products(path, meta):
        raw.append(np.asarray(Image.open(io.BytesIO(p["image"])).convert("RGB")))
        if p["category"] not in cats:
            cats.append(p["category"])
        labels.append(cats.index(p["category"]))
        titles.append(p["title"])
    return Items(raw, _render(raw, size), np.asarray(labels, np.int64), cats, titles)
