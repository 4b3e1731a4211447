"""The image encoder: image bytes in, L2-normalised vectors out.

decode (Pillow; JPEG in draft mode, so it decodes straight to near the target
size; EXIF orientation honoured) -> preprocess (shorter side to the model's
size, centre crop, normalise to NCHW) -> the runner. Identical image bytes reuse
their embedding from a bounded LRU cache (content hash).
"""

from __future__ import annotations

import hashlib
import io
import time

import numpy as np

from ..data.preprocess import fit_square
from ..errors import InvalidArgument
from ..security.images import ImagePolicy, scrub
from . import model_repo, objectness, regions
from .cache import QueryCache
from .runners import runner


def _pipeline(url: str):
    """A runner for Triton's image_pipeline ensemble, or None where that server lacks it."""
    from .runners import TritonRunner
    try:
        return TritonRunner(url, model_repo.IMAGE_PIPELINE)
    except ConnectionError:
        return None


class ImageEncoder:
    """An exported image model: image bytes in, unit vectors out."""

    kind = "image"

    def __init__(self, folder: str, threads: int | None = None, cache_size: int = 10_000,
                 triton: str | None = None, policy: ImagePolicy | None = None, spin: bool = False):
        meta = model_repo.read_meta(folder)
        self.name = meta["name"]
        self.dim = int(meta["dim"])
        self.size = int(meta["input_size"])          # square side the model takes
        self.mean = np.asarray(meta["mean"], np.float32).reshape(1, 3, 1, 1)
        self.std = np.asarray(meta["std"], np.float32).reshape(1, 3, 1, 1)
        self.runner = runner(folder, threads, triton, spin)
        # On Triton, when it serves the ensemble (model_repo.write_image_pipeline), image bytes go
        # there as they are: decoding and resizing run beside the model, not here.
        self.remote = _pipeline(triton) if triton else None
        self.cache = QueryCache(cache_size)
        self.policy = policy or ImagePolicy()   # which bytes are decoded at all (security/images.py)
        self.objectness = objectness.load(folder, self.dim)   # scene regions' scorer, if one was fitted

    # -- stages -----------------------------------------------------------------------
    def decode(self, data: bytes, side: int | None = None):
        """Bytes -> RGB (or grey) PIL image near `side` (default: the model's size; JPEG by draft
        mode), upright. The policy refuses from the header alone what it will not decode (format,
        bytes, pixels, shape)."""
        from PIL import ImageOps
        im = self.policy.open(data)
        side = side or self.size
        try:
            if im.format == "JPEG":
                im.draft("RGB", (side, side))  # DCT scaling: decode at 1/2..1/8 size
            im.load()  # before the EXIF lookup, which costs 5x more on an unloaded PNG
            im = ImageOps.exif_transpose(im)
            return im if im.mode in ("RGB", "L") else im.convert("RGB")
        except (OSError, SyntaxError, ValueError) as e:  # truncated or corrupt pixel data
            raise InvalidArgument(f"cannot decode the image ({len(data)} bytes): {scrub(str(e))}") from None

    def preprocess(self, images) -> np.ndarray:
        """RGB images -> float32 [B, 3, size, size]: shorter side to size, centre crop."""
        px = np.empty((len(images), self.size, self.size, 3), np.uint8)
        for i, im in enumerate(images):
            px[i] = fit_square(im, self.size)
        # Channel by channel into the NCHW buffer: a strided transpose-and-cast costs twice as much.
        x = np.empty((len(images), 3, self.size, self.size), np.float32)
        for c in range(3):
            np.subtract(px[..., c], self.mean[0, c, 0, 0], out=x[:, c], dtype=np.float32)
            x[:, c] /= self.std[0, c, 0, 0]
        return x

    def encode(self, x: np.ndarray) -> np.ndarray:
        return self.runner.run({"pixels": x})

    def encode_bytes(self, blobs: list[bytes]) -> np.ndarray:
        """Image bytes through Triton's image_pipeline, after the policy has read their headers
        (refused bytes never leave this process)."""
        for b in blobs:
            self.policy.open(b)
        return self.remote.run({"image": np.array([[bytes(b)] for b in blobs], dtype=object)})

    # -- interface ----------------------------------------------------------------------
    def embed(self, images) -> np.ndarray:
        """Bytes or PIL images -> [B, dim] unit vectors (bytes also fill the query cache,
        so a product's own image finds its embedding ready when it is searched)."""
        images = list(images)
        if self.remote is not None and all(isinstance(i, (bytes, bytearray)) for i in images):
            out = self.encode_bytes(images)
        else:
            ims = [self.decode(i) if isinstance(i, (bytes, bytearray)) else i.convert("RGB") for i in images]
            out = self.encode(self.preprocess(ims))
        for i, v in zip(images, out):
            if isinstance(i, (bytes, bytearray)):
                self.cache.put(hashlib.blake2b(i, digest_size=16).digest(), v)
        return out

    def embed_request(self, data: bytes, timings=None) -> np.ndarray:
        key = hashlib.blake2b(data, digest_size=16).digest()
        v = self.cache.get(key)
        if v is not None:
            if timings is not None:
                timings.cache_hit = True
            return v
        t0 = time.perf_counter_ns()
        if self.remote is not None:
            v = self.encode_bytes([data])[0]
            if timings is not None:
                timings.encode_us = (time.perf_counter_ns() - t0) // 1000
            self.cache.put(key, v)
            return v
        im = self.decode(data)
        t1 = time.perf_counter_ns()
        x = self.preprocess([im])
        t2 = time.perf_counter_ns()
        v = self.encode(x)[0]
        t3 = time.perf_counter_ns()
        if timings is not None:
            timings.decode_us, timings.preprocess_us, timings.encode_us = (
                (t1 - t0) // 1000, (t2 - t1) // 1000, (t3 - t2) // 1000)
        self.cache.put(key, v)
        return v

    def decode_scene(self, data: bytes, side: int = 1024):
        """Bytes -> (upright RGB PIL image with its longer side at most `side`, the factor back to the
        picture's pixels): a scene is searched in its regions, so it is not shrunk to the model's size."""
        from PIL import Image
        sent = max(self.policy.open(data).size)    # a turn by EXIF swaps the sides, never the longer one
        im = self.decode(data, side).convert("RGB")
        full = max(im.size)
        if full > side:
            im = im.resize((max(1, im.width * side // full), max(1, im.height * side // full)), Image.BILINEAR)
        return im, sent / max(im.size)

    def thumbnail(self, data: bytes, side: int = 128) -> bytes:
        im = self.decode(data)
        im.thumbnail((side, side))
        buf = io.BytesIO()
        im.save(buf, "JPEG", quality=85)
        return buf.getvalue()

    def warm_up(self) -> None:
        self.encode(np.zeros((1, 3, self.size, self.size), np.float32))
        regions.warm_up_in_background()
