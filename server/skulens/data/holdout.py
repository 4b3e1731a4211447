"""A second, independent scanner-view protocol: the validation set no training or tuning touches.

`views.py` makes the views the encoders are trained on (Pillow warps, scikit-image clutter). A model
can learn that generator's quirks, so this one shares none of its code or ranges: clutter from
opencv-doc's photos (never a training background), frames of 80-128 px, projective warps by
scikit-image with stronger tilt, motion blur along a random line, glare, partial occlusion by a
patch of another photo, colour casts and white-balance errors, gamma, shot noise, and JPEG with
random chroma subsampling, sent as the JPEG bytes themselves (a scanner sends files, not tensors).

Reported beside `views.py`'s protocol in every table (training/REPORT.md, bench/RESULTS.md);
tests/test_holdout.py holds that nothing in training imports it.
"""

from __future__ import annotations

import io
import os
from dataclasses import dataclass

import numpy as np

from .sources import OPENCV_DATA, photos  # noqa: F401 (the clutter photos; OPENCV_DATA for callers)
BACKGROUNDS = ("aero1.jpg", "baboon.jpg", "building.jpg", "fruits.jpg", "home.jpg", "leuvenA.jpg", "messi5.jpg",
               "orange.jpg", "starry_night.jpg", "stuff.jpg", "squirrel_cls.jpg", "smarties.png", "graf1.png",
               "rubberwhale1.png", "HappyFish.jpg", "board.jpg")


@dataclass(frozen=True)
class HoldoutSpec:
    frame: tuple[int, int] = (80, 128)            # frame side, pixels
    fill: tuple[float, float] = (0.4, 0.95)       # object side / frame side
    max_rotation: float = 30.0                    # degrees
    tilt: float = 0.2                             # corner jitter, fraction of the object side
    motion: tuple[int, int] = (1, 7)              # motion-blur line length, pixels (1 = none)
    glare: float = 0.35                           # chance of a specular highlight
    occlusion: float = 0.3                        # chance of a patch covering up to 20% of the object
    gamma: tuple[float, float] = (0.6, 1.6)
    cast: float = 0.25                            # per-channel gain spread
    shot_noise: tuple[float, float] = (0.0, 0.08)  # Poisson-like, relative to sqrt(intensity)
    jpeg: tuple[int, int] = (20, 90)


def _clutter(rng, bank: list[np.ndarray], size: int) -> np.ndarray:
    from skimage.transform import resize
    p = bank[rng.integers(len(bank))]
    h, w = p.shape[:2]
    side = int(rng.integers(min(h, w) // 4, min(h, w) + 1))
    y, x = int(rng.integers(0, h - side + 1)), int(rng.integers(0, w - side + 1))
    out = resize(p[y:y + side, x:x + side], (size, size), order=1, anti_aliasing=side > 2 * size)
    return np.rot90(out, int(rng.integers(4))).copy()


def _homography(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """The 3x3 matrix taking the four points a to b (direct linear transform, h33 = 1)."""
    m = []
    for (x, y), (u, v) in zip(a, b):
        m += [[x, y, 1, 0, 0, 0, -u * x, -u * y, u], [0, 0, 0, x, y, 1, -v * x, -v * y, v]]
    m = np.asarray(m, np.float64)
    h = np.linalg.solve(m[:, :8], m[:, 8])
    return np.append(h, 1.0).reshape(3, 3)


def _motion_kernel(rng, length: int) -> np.ndarray:
    k = np.zeros((length, length), np.float32)
    t = rng.uniform(0, np.pi)
    c = (length - 1) / 2
    for s in np.linspace(-c, c, 4 * length):
        k[int(round(c + s * np.sin(t))), int(round(c + s * np.cos(t)))] = 1
    return k / k.sum()


def view(item: np.ndarray, rng: np.random.Generator, bank: list[np.ndarray], spec: HoldoutSpec = HoldoutSpec()) -> bytes:
    """uint8 [h, w] grey article (bright on black) or [h, w, 3] photo -> JPEG bytes of one frame."""
    from PIL import Image
    from scipy import ndimage
    from skimage.transform import ProjectiveTransform, warp
    size = int(rng.integers(spec.frame[0], spec.frame[1] + 1))
    obj = item.astype(np.float32) / 255.0
    if obj.ndim == 2:
        mask = np.clip(obj * 6.0, 0, 1)          # an article's own intensity is its outline
        obj = np.repeat(obj[..., None], 3, 2)
    else:
        mask = np.ones(obj.shape[:2], np.float32)
    h, w = mask.shape
    side = size * rng.uniform(*spec.fill)
    t = np.deg2rad(rng.uniform(-spec.max_rotation, spec.max_rotation))
    centre = size / 2 + rng.uniform(-1, 1, 2) * max(0.0, size - side) / 2
    rot = np.array([[np.cos(t), -np.sin(t)], [np.sin(t), np.cos(t)]])
    unit = np.array([[-.5, -.5], [.5, -.5], [.5, .5], [-.5, .5]])
    dst = unit * side @ rot.T + centre + rng.uniform(-spec.tilt, spec.tilt, (4, 2)) * side
    src = np.array([[0, 0], [w, 0], [w, h], [0, h]], np.float64)
    tf = ProjectiveTransform(_homography(dst, src))   # output (x, y) -> item (x, y), as warp wants
    fg = warp(obj, tf, output_shape=(size, size), order=1)
    a = warp(mask, tf, output_shape=(size, size), order=1)[..., None]
    if rng.random() < spec.occlusion:              # a patch of another photo over part of the object
        ph, pw = (np.sqrt(rng.uniform(0.05, 0.2)) * side * rng.uniform(0.6, 1.4, 2)).astype(int) + 1
        y = int(np.clip(centre[1] + rng.uniform(-.5, .5) * side - ph / 2, 0, size - 1))
        x = int(np.clip(centre[0] + rng.uniform(-.5, .5) * side - pw / 2, 0, size - 1))
        fg[y:y + ph, x:x + pw] = _clutter(rng, bank, size)[y:y + ph, x:x + pw]
        a[y:y + ph, x:x + pw] = 1.0
    out = _clutter(rng, bank, size) * (1 - a) + fg * a
    out = out * (1 + rng.uniform(-spec.cast, spec.cast, 3))          # colour cast / white balance
    if rng.random() < spec.glare:
        yy, xx = np.mgrid[:size, :size]
        gy, gx = rng.uniform(0, size, 2)
        r = rng.uniform(0.08, 0.3) * size
        out = out + rng.uniform(0.3, 0.9) * np.exp(-((yy - gy) ** 2 + (xx - gx) ** 2) / (2 * r * r))[..., None]
    out = np.clip(out, 0, 1) ** rng.uniform(*spec.gamma)
    n = int(rng.integers(spec.motion[0], spec.motion[1] + 1))
    if n > 1:
        k = _motion_kernel(rng, n)
        out = np.stack([ndimage.convolve(out[..., c], k, mode="reflect") for c in range(3)], 2)
    out = out + rng.normal(0, 1, out.shape) * np.sqrt(np.maximum(out, 0)) * rng.uniform(*spec.shot_noise)
    buf = io.BytesIO()
    Image.fromarray((np.clip(out, 0, 1) * 255 + 0.5).astype(np.uint8)).save(
        buf, "JPEG", quality=int(rng.integers(spec.jpeg[0], spec.jpeg[1] + 1)),
        subsampling=int(rng.choice([0, 1, 2])))
    return buf.getvalue()


class HoldoutViews:
    """Seeded frames of a set of items, reproducible per (seed, index), as JPEG bytes."""

    def __init__(self, items, seed: int = 20261202, spec: HoldoutSpec = HoldoutSpec()):
        self.items, self.seed, self.spec = items, seed, spec
        self.bank = photos(BACKGROUNDS)

    def __call__(self, indices) -> list[bytes]:
        return [view(self.items[i], np.random.default_rng((self.seed, int(i))), self.bank, self.spec)
                for i in indices]


def decode(jpegs: list[bytes], size: int) -> np.ndarray:
    """JPEG frames -> uint8 [n, size, size, 3] through the serving preprocessing (in-process evaluation)."""
    from PIL import Image
    from .preprocess import fit_square
    return np.stack([fit_square(Image.open(io.BytesIO(b)).convert("RGB"), size) for b in jpegs])
