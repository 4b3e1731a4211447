"""Pictures as the models take them, shared by serving and training (one definition,
so a model is trained on exactly the pixels it is served)."""

from __future__ import annotations

import numpy as np


def fit_square(im, size: int) -> np.ndarray:
    """RGB or grey PIL image -> uint8 [size, size, 3]: shorter side to `size`, centre crop. Training
    (skulens_train) feeds its models through this same function. A grey image is resized as
    grey (a third of the work) and made RGB after: the same pixels as converting it first."""
    from PIL import Image
    w, h = im.size
    s = size / min(w, h)
    im = im.resize((max(size, round(w * s)), max(size, round(h * s))), Image.BILINEAR, reducing_gap=2.0)
    left, top = (im.width - size) // 2, (im.height - size) // 2
    im = im.crop((left, top, left + size, top + size))
    return np.asarray(im if im.mode == "RGB" else im.convert("RGB"))
