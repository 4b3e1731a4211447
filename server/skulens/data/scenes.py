"""Synthetic shelf scenes: several catalogue articles in one frame, for multi-object search.

2-6 articles at different scales (a sixth to a half of the frame's height), partly overlapping, on a
clutter photo from opencv-doc (none a training background), lit unevenly, JPEG-compressed. Seeded:
scene k of seed s is always the same picture with the same ground-truth boxes. Articles come from the
Fashion-MNIST test split, so none was seen in training.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np

from ..encode.regions import iou  # noqa: F401 (the scenes' scorer uses it)
from .sources import photos
from .views import _paste

SCENE_BACKGROUNDS = ("aero3.jpg", "apple.jpg", "butterfly.jpg", "leuvenB.jpg", "building.jpg", "fruits.jpg",
                     "home.jpg", "stuff.jpg", "baboon.jpg", "starry_night.jpg")


@dataclass
class Scene:
    jpeg: bytes
    boxes: np.ndarray        # int [n, 4]: x0, y0, x1, y1 in pixels
    items: np.ndarray        # int [n]: the article shown in each box


class SceneMaker:
    def __init__(self, articles: np.ndarray, width: int = 640, height: int = 480, seed: int = 0,
                 bank: list[np.ndarray] | None = None):
        """bank: clutter photos (float RGB in 0..1); default the opencv-doc ones no training uses."""
        self.articles, self.w, self.h, self.seed = articles, width, height, seed
        self.bank = photos(SCENE_BACKGROUNDS) if bank is None else bank

    def __call__(self, k: int) -> Scene:
        from PIL import Image
        rng = np.random.default_rng((self.seed, k))
        p = self.bank[rng.integers(len(self.bank))]
        ph, pw = p.shape[:2]
        s = max(self.h / ph, self.w / pw) * rng.uniform(1.0, 1.6)
        bg = Image.fromarray((p * 255).astype(np.uint8)).resize((int(pw * s) + 1, int(ph * s) + 1), Image.BILINEAR)
        x, y = int(rng.integers(0, bg.width - self.w + 1)), int(rng.integers(0, bg.height - self.h + 1))
        out = np.asarray(bg.crop((x, y, x + self.w, y + self.h)), np.float32)
        n = int(rng.integers(2, 7))
        items = rng.choice(len(self.articles), n, replace=False)
        boxes = []
        for it in items:
            for _ in range(50):   # a place overlapping the others by at most a third of either box
                side = int(self.h * rng.uniform(1 / 6, 1 / 2))
                bx, by = int(rng.integers(0, self.w - side)), int(rng.integers(0, self.h - side))
                b = np.array([bx, by, bx + side, by + side])
                if not boxes or iou(b[None], np.array(boxes)).max() < 0.2:
                    break
            a = _paste(out, self.articles[it], rng, side, bx + side / 2, by + side / 2)
            ys, xs = np.nonzero(a > 20)   # the box is the article's visible extent, as an annotator draws it
            boxes.append([bx + xs.min(), by + ys.min(), bx + xs.max() + 1, by + ys.max() + 1] if len(xs) else b)
        ramp = np.linspace(rng.uniform(0.7, 1.2), rng.uniform(0.7, 1.2), self.w, dtype=np.float32)
        out = np.clip(out * ramp[None, :, None], 0, 255).astype(np.uint8)
        buf = io.BytesIO()
        Image.fromarray(out).save(buf, "JPEG", quality=int(rng.integers(60, 95)))
        return Scene(buf.getvalue(), np.asarray(boxes, np.int64), items.astype(np.int64))
