"""Fashion-MNIST, the real product images the demo and the training use.

Debian's `dataset-fashion-mnist` puts Zalando's 70,000 article images (28x28
grey, 10 classes) in /usr/share/datasets/fashion-mnist/ as IDX files. The
dataset has no titles; `title()` derives an honest one from the class alone.
"""

from __future__ import annotations

import gzip
import os

import numpy as np

ROOT = "/usr/share/datasets/fashion-mnist"
CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]
CATEGORY = ["tops", "trousers", "pullovers", "dresses", "coats", "sandals", "shirts", "sneakers", "bags", "boots"]


def available(root: str = ROOT) -> bool:
    return os.path.exists(os.path.join(root, "train-images-idx3-ubyte.gz"))


def _idx(path: str) -> np.ndarray:
    with gzip.open(path, "rb") as f:
        data = f.read()
    magic = int.from_bytes(data[:4], "big")
    ndim = magic & 0xFF
    if magic >> 8 != 0x08 or ndim not in (1, 3):
        raise ValueError(f"{path} is not an IDX file of unsigned bytes")
    shape = [int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim)]
    return np.frombuffer(data, np.uint8, offset=4 + 4 * ndim).reshape(shape)


def load(split: str = "train", root: str = ROOT) -> tuple[np.ndarray, np.ndarray]:
    """(images uint8 [N, 28, 28], labels uint8 [N]) of 'train' (60k) or 'test' (10k)."""
    if split not in ("train", "test"):
        raise ValueError("split is 'train' or 'test'")
    if not available(root):
        raise FileNotFoundError(f"Fashion-MNIST is not in {root}: apt-get install dataset-fashion-mnist")
    p = "train" if split == "train" else "t10k"
    return _idx(os.path.join(root, f"{p}-images-idx3-ubyte.gz")), _idx(os.path.join(root, f"{p}-labels-idx1-ubyte.gz"))


def title(label: int) -> str:
    """What the class tells and nothing more: the dataset carries no product names."""
    return f"{CLASSES[label]} (Fashion-MNIST article)"
