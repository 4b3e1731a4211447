"""The objectness head of scene search: how likely a candidate region holds one catalogue product.

A logistic regression over the region's embedding and five box features (FEATURES), trained by
`skulens-train objectness` on synthetic shelves of training articles on training backgrounds
(skulens_train/objectness.py) and shipped beside the image model it was fitted to, as
`objectness.json` in the model's folder. This module owns that file. Without it (an encoder
exported before the head existed, or one never fitted) a region scores its best match's cosine.

Why learned: a clutter crop can match some product at cosine 0.75-0.85 while a real article
scores 0.80; the embedding itself says whether a crop looks like a product at all, and the box
says whether it is framed like one. On held-aside tuning shelves it lifted articles found from
0.71 to 0.76 at the same number of regions (training/REPORT.md).
"""

from __future__ import annotations

import json
import os

import numpy as np

FILE = "objectness.json"
FORMAT = 1
FEATURES = ("best_cosine", "log_area_fraction", "log_aspect", "log1p_contrast", "log1p_contrast_rank")


def features(boxes: np.ndarray, frame: tuple[int, int], contrast: np.ndarray, best: np.ndarray,
             vecs: np.ndarray) -> np.ndarray:
    """[n, 5 + dim]: FEATURES then the embedding. Boxes in the decoded frame's pixels (h, w = frame),
    in the order the proposals were ranked (by contrast), so row i's rank is i."""
    b = np.asarray(boxes, np.float64).reshape(-1, 4)
    w = np.maximum(b[:, 2] - b[:, 0], 1.0)
    h = np.maximum(b[:, 3] - b[:, 1], 1.0)
    cols = [np.asarray(best, np.float64), np.log(w * h / float(frame[0] * frame[1])), np.log(w / h),
            np.log1p(np.maximum(np.asarray(contrast, np.float64), 0.0)), np.log1p(np.arange(len(b), dtype=np.float64))]
    return np.concatenate([np.stack(cols, 1), np.asarray(vecs, np.float64).reshape(len(b), -1)], 1)


class Objectness:
    def __init__(self, mean, scale, coef, intercept: float, floor: float, meta: dict | None = None):
        self.mean, self.scale = np.asarray(mean, np.float64), np.asarray(scale, np.float64)
        self.coef, self.intercept = np.asarray(coef, np.float64), float(intercept)
        self.floor = float(floor)        # the default min_objectness, chosen when it was fitted
        self.meta = meta or {}
        if not (len(self.mean) == len(self.scale) == len(self.coef) > len(FEATURES)):
            raise ValueError(f"objectness head: mean/scale/coef lengths differ ({len(self.mean)}, "
                             f"{len(self.scale)}, {len(self.coef)})")

    @property
    def dim(self) -> int:
        return len(self.coef) - len(FEATURES)

    def score(self, x: np.ndarray) -> np.ndarray:
        """features() rows -> probabilities in 0..1."""
        z = ((x - self.mean) / self.scale) @ self.coef + self.intercept
        return 1.0 / (1.0 + np.exp(-np.clip(z, -40, 40)))

    def save(self, path: str) -> None:
        doc = {"format": FORMAT, "features": list(FEATURES) + [f"embedding[{self.dim}]"],
               "mean": self.mean.tolist(), "scale": self.scale.tolist(), "coef": self.coef.tolist(),
               "intercept": self.intercept, "floor": self.floor, **self.meta}
        tmp = path + ".tmp"
        with open(tmp, "w") as f:
            json.dump(doc, f, indent=1)
        os.replace(tmp, path)

    @classmethod
    def read(cls, path: str) -> "Objectness":
        try:
            with open(path) as f:
                doc = json.load(f)
        except (OSError, ValueError) as e:   # a truncated or hand-edited file: say which one
            raise ValueError(f"{path}: not a readable objectness head ({e})") from e
        if not isinstance(doc, dict) or doc.get("format") != FORMAT:
            got = doc.get("format") if isinstance(doc, dict) else type(doc).__name__
            raise ValueError(f"{path}: objectness format {got!r}, this server reads {FORMAT}")
        meta = {k: v for k, v in doc.items()
                if k not in ("format", "features", "mean", "scale", "coef", "intercept", "floor")}
        try:
            return cls(doc["mean"], doc["scale"], doc["coef"], doc["intercept"], doc["floor"], meta)
        except (KeyError, TypeError) as e:
            raise ValueError(f"{path}: objectness head lacks or mangles {e}") from e


def load(folder: str, dim: int) -> Objectness | None:
    """The head beside an image model, or None when it has none; a head fitted to another
    embedding size is an error, not a silent fallback."""
    path = os.path.join(folder, FILE)
    if not os.path.exists(path):
        return None
    head = Objectness.read(path)
    if head.dim != dim:
        raise ValueError(f"{path} was fitted to {head.dim}-d embeddings; this image model gives {dim}")
    return head
