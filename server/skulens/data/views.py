"""Scanner views: a catalogue image as a phone or a checkout scanner would see it.

The product is pasted onto a real photo (clutter), filling half to all of the
frame, turned up to 15 degrees, seen in perspective, lit unevenly, blurred,
with sensor noise, and JPEG-compressed down to quality 35. Instance retrieval
is finding the exact product from such a view. Training and evaluation draw
their clutter from disjoint sets of photos (scikit-image's sample images, in the
wheel), so a model cannot score by remembering the backgrounds.

Torch-free (numpy + Pillow): training draws its batches from here, and the demo
and the benchmarks make their queries with the same code.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from .preprocess import fit_square

TRAIN_BACKGROUNDS = ("astronaut", "brick", "camera", "coffee", "coins", "grass", "gravel", "rocket", "text",
                     "clock", "retina", "immunohistochemistry")
EVAL_BACKGROUNDS = ("chelsea", "page", "hubble_deep_field", "moon", "horse", "cell", "colorwheel")


@dataclass(frozen=True)
class ViewSpec:
    """How hard the views are. The defaults are the issue's bar; `hard()` is the evaluation's."""
    fill: tuple[float, float] = (0.5, 1.0)       # object side / frame side
    max_rotation: float = 15.0                    # degrees
    perspective: float = 0.12                     # corner jitter, fraction of the object side
    blur: tuple[float, float] = (0.0, 1.2)        # Gaussian radius, pixels
    noise: tuple[float, float] = (0.0, 12.0)      # sigma, 0..255 units
    jpeg: tuple[int, int] = (35, 95)
    brightness: tuple[float, float] = (0.6, 1.4)
    contrast: tuple[float, float] = (0.6, 1.3)
    # Randomised extras, off in the standard protocol; `wide()` turns them on for training.
    synthetic: float = 0.0                        # share of frames on procedural clutter, not a photo
    cast: float = 0.15                            # per-channel gain spread of the light
    smear: float = 0.0                            # chance of a directional (motion-like) smear
    cover: float = 0.0                            # chance of a shape covering part of the object
    gamma: tuple[float, float] = (1.0, 1.0)
    # `shelf()` adds what a region cropped from a shelf photo and a larger scanner frame look like.
    crowd: float = 0.0                            # chance of neighbouring articles at the frame's edges
    glare: float = 0.0                            # chance of a specular highlight
    frame: tuple[float, float] = (1.0, 1.0)       # frame side / model input: drawn, JPEG'd, then resized
    #                                               by the server's own fit_square, as a sent frame is

    @staticmethod
    def wide() -> "ViewSpec":
        """Training's randomised views: wider ranges, procedural clutter (domain randomisation, so the
        model cannot learn a dozen photos as "background"), smears, covers, gamma and colour casts.
        Evaluation keeps the standard protocol, and skulens.data.holdout is the one nobody trains on."""
        return ViewSpec(fill=(0.4, 1.0), max_rotation=25.0, perspective=0.18, blur=(0.0, 1.6), noise=(0.0, 16.0),
                        jpeg=(25, 95), brightness=(0.5, 1.5), contrast=(0.5, 1.4), synthetic=0.4, cast=0.3,
                        smear=0.3, cover=0.25, gamma=(0.7, 1.5))

    @staticmethod
    def shelf() -> "ViewSpec":
        """wide() plus crowding (the crop of one article on a shelf holds parts of its neighbours, as
        SearchScene's crops do), glare, and frames 1-2x the model's input drawn and JPEG-compressed at
        their own size, then downscaled by serving's preprocessing: the pixels a sent frame becomes."""
        from dataclasses import replace
        return replace(ViewSpec.wide(), crowd=0.35, glare=0.25, frame=(1.0, 2.0))


def _photo(name: str) -> np.ndarray:
    import skimage.data as sd
    a = np.asarray(getattr(sd, name)())
    if a.ndim == 2:
        a = np.repeat(a[..., None], 3, axis=2)
    return np.ascontiguousarray(a[..., :3].astype(np.uint8))


def synthetic_clutter(rng: np.random.Generator, size: int) -> np.ndarray:
    """A procedural background: a colour gradient under random shapes, stripes and lines."""
    c0, c1 = rng.uniform(0, 255, 3), rng.uniform(0, 255, 3)
    t = np.linspace(0, 1, size, dtype=np.float32)[:, None, None]
    im = Image.fromarray((c0 * (1 - t) + c1 * t).repeat(size, 1).astype(np.uint8))
    d = ImageDraw.Draw(im)
    for _ in range(int(rng.integers(3, 14))):
        box = sorted(rng.integers(-size // 4, size + size // 4, 2)), sorted(rng.integers(-size // 4, size + size // 4, 2))
        xy = [box[0][0], box[1][0], box[0][1] + 2, box[1][1] + 2]
        fill = tuple(int(v) for v in rng.integers(0, 256, 3))
        kind = rng.integers(3)
        if kind == 0:
            d.rectangle(xy, fill=fill)
        elif kind == 1:
            d.ellipse(xy, fill=fill)
        else:
            d.line(xy, fill=fill, width=int(rng.integers(1, max(2, size // 10))))
    if rng.random() < 0.5:
        im = im.filter(ImageFilter.GaussianBlur(float(rng.uniform(0, 2.5))))
    return np.asarray(im, np.float32)


class Backgrounds:
    def __init__(self, names=TRAIN_BACKGROUNDS):
        self.photos = [_photo(n) for n in names]

    def crop(self, rng: np.random.Generator, size: int) -> np.ndarray:
        p = self.photos[rng.integers(len(self.photos))]
        h, w = p.shape[:2]
        short = min(h, w)
        lo = min(size, short)   # a photo smaller than the frame is cropped whole and enlarged
        side = min(int(rng.integers(lo, max(lo + 1, short // 2))), short)
        y, x = int(rng.integers(0, h - side + 1)), int(rng.integers(0, w - side + 1))
        im = Image.fromarray(p[y:y + side, x:x + side]).resize((size, size), Image.BILINEAR)
        a = np.asarray(im, np.float32)
        return a[:, ::-1] if rng.random() < 0.5 else a


def _perspective_coeffs(dst: np.ndarray, src: np.ndarray) -> np.ndarray:
    """PIL's PERSPECTIVE coefficients mapping output (dst) points back to input (src) points."""
    a = []
    for (x, y), (u, v) in zip(dst, src):
        a.append([x, y, 1, 0, 0, 0, -u * x, -u * y])
        a.append([0, 0, 0, x, y, 1, -v * x, -v * y])
    return np.linalg.solve(np.asarray(a, np.float64), src.reshape(8).astype(np.float64))


def _paste(out: np.ndarray, item: np.ndarray, rng, side: float, cx: float, cy: float) -> np.ndarray:
    """Composite an upright article of `side` pixels centred at (cx, cy) onto `out` (float [h, w, 3]) in
    place: a grey article's intensity is its alpha and it takes a 0.8-1.2 tint per channel. Returns the
    article as resized (the scenes' boxes are its visible extent)."""
    n = max(4, int(side))
    a = np.asarray(Image.fromarray(item).resize((n, n), Image.BILINEAR), np.float32)
    grey = a
    if a.ndim == 2:
        alpha, a = np.clip(a / 40.0, 0, 1)[..., None], a[..., None] * rng.uniform(0.8, 1.2, 3)
    else:
        alpha = np.ones((n, n, 1), np.float32)
    h, w = out.shape[:2]
    x0, y0 = int(cx - n / 2), int(cy - n / 2)
    ox0, oy0, ox1, oy1 = max(0, x0), max(0, y0), min(w, x0 + n), min(h, y0 + n)
    if ox1 > ox0 and oy1 > oy0:
        sl = (slice(oy0 - y0, oy1 - y0), slice(ox0 - x0, ox1 - x0))
        al = alpha[sl]
        out[oy0:oy1, ox0:ox1] = out[oy0:oy1, ox0:ox1] * (1 - al) + a[sl] * al
    return grey


def _crowd(out: np.ndarray, rng, neighbours, side: float, cx: float, cy: float) -> np.ndarray:
    """1-3 other articles beside the object, each overlapping the frame's edge and a little of the
    object's box: what a scene crop with context around one shelf article holds."""
    for _ in range(int(rng.integers(1, 4))):
        t = rng.uniform(0, 2 * np.pi)
        ns = side * rng.uniform(0.5, 1.6)
        d = (side + ns) / 2 * rng.uniform(0.75, 1.05)   # centre distance: touching to overlapping
        _paste(out, neighbours(rng), rng, ns, cx + d * np.cos(t), cy + d * np.sin(t))
    return out


def _glare(out: np.ndarray, rng) -> np.ndarray:
    """A specular highlight: a blurred bright ellipse added to the frame."""
    s = out.shape[0]
    m = Image.new("L", (s, s))
    x, y = rng.uniform(0, s, 2)
    rx, ry = s * rng.uniform(0.05, 0.25, 2)
    ImageDraw.Draw(m).ellipse([x - rx, y - ry, x + rx, y + ry], fill=255)
    m = m.filter(ImageFilter.GaussianBlur(float(max(rx, ry)) * 0.6))
    return out + np.asarray(m, np.float32)[..., None] * rng.uniform(0.4, 1.0)


def scanner_view(item: np.ndarray, rng: np.random.Generator, size: int, backgrounds: Backgrounds,
                 spec: ViewSpec = ViewSpec(), neighbours=None) -> np.ndarray:
    """uint8 [h, w] grey article (bright object on black, as Fashion-MNIST) or [h, w, 3] product photo
    (the whole photo is the object) -> uint8 [size, size, 3]. neighbours: rng -> another item, for
    spec.crowd."""
    final = size
    if spec.frame != (1.0, 1.0):
        size = int(round(size * rng.uniform(*spec.frame)))
    h, w = item.shape[:2]
    side = size * rng.uniform(*spec.fill)
    theta = np.deg2rad(rng.uniform(-spec.max_rotation, spec.max_rotation))
    slack = max(0.0, (size - side) / 2)
    cx, cy = size / 2 + rng.uniform(-slack, slack), size / 2 + rng.uniform(-slack, slack)
    corners = np.array([[-1, -1], [1, -1], [1, 1], [-1, 1]], np.float64) * side / 2
    rot = np.array([[np.cos(theta), -np.sin(theta)], [np.sin(theta), np.cos(theta)]])
    dst = corners @ rot.T + [cx, cy] + rng.uniform(-spec.perspective, spec.perspective, (4, 2)) * side
    src = np.array([[0, 0], [w, 0], [w, h], [0, h]], np.float64)
    coeffs = tuple(_perspective_coeffs(dst, src))
    warp = lambda a: np.asarray(Image.fromarray(a).transform((size, size), Image.PERSPECTIVE, coeffs,  # noqa: E731
                                                            Image.BILINEAR), np.float32)
    obj = warp(item)
    if item.ndim == 2:
        # Fashion-MNIST articles are bright on black: the intensity doubles as the object's mask.
        alpha, obj = np.clip(obj / 40.0, 0, 1)[..., None], obj[..., None]
    else:
        alpha = warp(np.full((h, w), 255, np.uint8))[..., None] / 255.0
    fg = obj * rng.uniform(1 - spec.cast, 1 + spec.cast, 3).astype(np.float32)  # colour cast of the light
    clutter = backgrounds.crop if rng.random() >= spec.synthetic else synthetic_clutter
    if spec.cover and rng.random() < spec.cover:   # something in front of part of the object
        patch = clutter(rng, size)
        m = Image.new("L", (size, size))
        r = side * rng.uniform(0.12, 0.3)
        x, y = cx + rng.uniform(-side, side) / 2, cy + rng.uniform(-side, side) / 2
        ImageDraw.Draw(m).ellipse([x - r, y - r * rng.uniform(0.5, 2), x + r, y + r], fill=255)
        cm = np.asarray(m, np.float32)[..., None] / 255.0
        fg, alpha = fg * (1 - cm) + patch * cm, np.maximum(alpha, cm)
    back = clutter(rng, size)
    if neighbours is not None and spec.crowd and rng.random() < spec.crowd:
        back = _crowd(back, rng, neighbours, side, cx, cy)
    out = back * (1 - alpha) + fg * alpha
    if spec.glare and rng.random() < spec.glare:
        out = _glare(out, rng)
    # Uneven light: a brightness ramp across the frame, then global contrast.
    ramp = np.linspace(rng.uniform(*spec.brightness), rng.uniform(*spec.brightness), size, dtype=np.float32)
    out = out * (ramp[None, :, None] if rng.random() < 0.5 else ramp[:, None, None])
    c = rng.uniform(*spec.contrast)
    out = (out - out.mean()) * c + out.mean()
    if spec.gamma != (1.0, 1.0):
        out = 255.0 * (np.clip(out, 0, 255) / 255.0) ** rng.uniform(*spec.gamma)
    im = Image.fromarray(np.clip(out, 0, 255).astype(np.uint8))
    r = rng.uniform(*spec.blur)
    if r > 0.05:
        im = im.filter(ImageFilter.GaussianBlur(r))
    if spec.smear and rng.random() < spec.smear:   # a shake: the frame averaged along a direction
        a, t, k = np.asarray(im, np.float32), rng.uniform(0, np.pi), int(rng.integers(2, 6))
        im = Image.fromarray(np.mean([np.roll(a, (round(i * np.sin(t)), round(i * np.cos(t))), (0, 1))
                                      for i in range(k)], 0).astype(np.uint8))
    a = np.asarray(im, np.float32) + rng.normal(0, rng.uniform(*spec.noise), (size, size, 3)).astype(np.float32)
    buf = io.BytesIO()
    Image.fromarray(np.clip(a, 0, 255).astype(np.uint8)).save(buf, "JPEG", quality=int(rng.integers(spec.jpeg[0],
                                                                                                    spec.jpeg[1] + 1)))
    im = Image.open(io.BytesIO(buf.getvalue())).convert("RGB")
    return np.asarray(im) if size == final else fit_square(im, final)


def catalogue_image(item: np.ndarray, size: int) -> np.ndarray:
    """The catalogue's own picture of an article, as the server's preprocessing feeds it to the model."""
    return fit_square(Image.fromarray(item).convert("RGB"), size)


class ViewMaker:
    """Seeded scanner views of a set of items, reproducible per (seed, index)."""

    def __init__(self, items, size: int, backgrounds=TRAIN_BACKGROUNDS, spec: ViewSpec = ViewSpec(), seed: int = 0):
        self.items, self.size, self.spec, self.seed = items, size, spec, seed
        self.backgrounds = Backgrounds(backgrounds)

    def _neighbour(self, rng) -> np.ndarray:
        return self.items[int(rng.integers(len(self.items)))]

    def __call__(self, indices, epoch: int = 0) -> np.ndarray:
        out = np.empty((len(indices), self.size, self.size, 3), np.uint8)
        for j, i in enumerate(indices):
            rng = np.random.default_rng((self.seed, epoch, int(i)))
            out[j] = scanner_view(self.items[i], rng, self.size, self.backgrounds, self.spec, self._neighbour)
        return out
