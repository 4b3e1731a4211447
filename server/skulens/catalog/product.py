"""What a product is, and the one place its fields and a query's arguments are checked.

Every write and search enters the catalogue through these functions, so the
indexes and the store behind them receive only checked, normalised values.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass, field
from typing import NamedTuple

import numpy as np

from ..errors import InvalidArgument
from ..limits import (MAX_ATTRIBUTE_KEY, MAX_ATTRIBUTES, MAX_EF, MAX_ID_BYTES, MAX_IMAGE_ID_BYTES, MAX_IMAGES,
                      MAX_TEXT, MAX_THUMBNAIL, MAX_TOP_K)


@dataclass(slots=True)
class Product:
    id: str
    sku: str = ""
    title: str = ""
    category: str = ""
    attributes: dict[str, str] = field(default_factory=dict)
    vector: np.ndarray | None = None
    text_vector: np.ndarray | None = None
    created: float | None = None
    updated: float | None = None
    thumbnail: bytes | None = None  # small reference image (JPEG/PNG); stored apart, not returned by get
    # More reference images (other sides, the packaging): name -> unit vector, each indexed on its
    # own; a search returns the product once, scored by its best-matching image. `vector` is the
    # main image, named "" wherever an image is named.
    images: dict[str, np.ndarray] = field(default_factory=dict)
    image_thumbnails: dict[str, bytes] = field(default_factory=dict)  # name -> thumbnail, as `thumbnail`


class Hit(NamedTuple):
    id: str
    score: float
    image: str = ""   # the best-matching image of the product: "" its main one, else its name
    images: tuple = ()  # (name, score) of its best images, best first, when a search asks for more than 1


FIELDS = frozenset(Product.__dataclass_fields__)


def coerce(p, dim: int, text_dim: int | None) -> Product:
    """A Product or dict as a checked Product with unit float32 vectors."""
    if isinstance(p, dict):
        extra = set(p) - FIELDS
        if extra:
            raise InvalidArgument(f"unknown product field(s) {sorted(extra)}; expected {sorted(FIELDS)}")
        if "id" not in p:
            raise InvalidArgument("product has no id")
        p = Product(**p)
    elif not isinstance(p, Product):
        raise InvalidArgument(f"a product must be a Product or a dict, got {type(p).__name__}")
    check_id(p.id)
    what = f"product {p.id!r}"
    text = {}
    for name in ("sku", "title", "category"):
        v = getattr(p, name)
        v = "" if v is None else v
        if not isinstance(v, str) or len(v) > MAX_TEXT:
            raise InvalidArgument(f"{what}: {name} must be a string of at most {MAX_TEXT} characters")
        text[name] = v
    attrs = {} if p.attributes is None else p.attributes
    if not isinstance(attrs, dict) or len(attrs) > MAX_ATTRIBUTES:
        raise InvalidArgument(f"{what}: attributes must be a dict of at most {MAX_ATTRIBUTES} entries")
    for k, v in attrs.items():
        if (not isinstance(k, str) or not isinstance(v, str) or not k or len(k) > MAX_ATTRIBUTE_KEY
                or len(v) > MAX_TEXT):
            raise InvalidArgument(f"{what}: attribute {k!r}={v!r} must map a non-empty string "
                                  f"to a string")
        if k == "category":
            raise InvalidArgument(f"{what}: 'category' is a product field, not an attribute")
    if p.vector is None:
        raise InvalidArgument(f"{what} has no vector")
    vec = unit(p.vector, dim, f"{what} vector")
    tvec = None if p.text_vector is None else unit(p.text_vector, text_dim or dim, f"{what} text_vector")
    if p.thumbnail is not None and (not isinstance(p.thumbnail, (bytes, bytearray))
                                    or len(p.thumbnail) > MAX_THUMBNAIL):
        raise InvalidArgument(f"{what}: thumbnail must be bytes of at most {MAX_THUMBNAIL}")
    images, thumbs = check_images(p.images, p.image_thumbnails, dim, what)
    if len(images) + 1 > MAX_IMAGES:
        raise InvalidArgument(f"{what}: {len(images) + 1} images; a product holds at most {MAX_IMAGES}")
    return Product(p.id, text["sku"], text["title"], text["category"], dict(attrs), vec, tvec,
                   thumbnail=None if p.thumbnail is None else bytes(p.thumbnail), images=images,
                   image_thumbnails=thumbs)


def check_images(images, thumbnails, dim: int, what: str) -> tuple[dict, dict]:
    """A product's named extra images as {name: unit vector} and their thumbnails."""
    images = {} if images is None else images
    thumbnails = {} if thumbnails is None else thumbnails
    if not isinstance(images, dict) or not isinstance(thumbnails, dict):
        raise InvalidArgument(f"{what}: images and image_thumbnails must map image names to vectors / bytes")
    out = {}
    for name, v in images.items():
        check_image_id(name, what)
        out[name] = unit(v, dim, f"{what} image {name!r}")
    thumbs = {}
    for name, t in thumbnails.items():
        if name not in out:
            raise InvalidArgument(f"{what}: a thumbnail for image {name!r}, which it does not have")
        if not isinstance(t, (bytes, bytearray)) or len(t) > MAX_THUMBNAIL:
            raise InvalidArgument(f"{what}: image {name!r}'s thumbnail must be bytes of at most {MAX_THUMBNAIL}")
        thumbs[name] = bytes(t)
    return out, thumbs


def check_image_id(name, what: str = "product") -> None:
    """An extra image's name: non-empty ("" is the main image), printable, at most MAX_IMAGE_ID_BYTES."""
    if not isinstance(name, str) or not name:
        raise InvalidArgument(f"{what}: an image id must be a non-empty string (the main image has none), "
                              f"got {name!r}")
    if len(name.encode("utf-8", "surrogatepass")) > MAX_IMAGE_ID_BYTES or not name.isprintable():
        raise InvalidArgument(f"{what}: image id {name[:40]!r} must be printable and at most "
                              f"{MAX_IMAGE_ID_BYTES} bytes")


def check_id(i) -> None:
    if not isinstance(i, str) or not i:
        raise InvalidArgument(f"a product id must be a non-empty string, got {i!r}")
    if len(i.encode("utf-8", "surrogatepass")) > MAX_ID_BYTES:
        raise InvalidArgument(f"product id longer than {MAX_ID_BYTES} bytes: {i[:40]!r}...")


def count(v, what: str, top: int) -> int:
    """An integer in 1..top (k, ef)."""
    if type(v) is int and 1 <= v <= top:
        return v
    if type(v) is not int and (isinstance(v, bool) or not isinstance(v, numbers.Integral)):
        raise InvalidArgument(f"{what} must be an integer in 1..{top}, got {v!r}")
    if not 1 <= v <= top:
        raise InvalidArgument(f"{what} must be an integer in 1..{top}, got {v!r}")
    return int(v)


def top_k(v) -> int:
    return count(v, "k", MAX_TOP_K)


def ef(v) -> int | None:
    return None if v is None else count(v, "ef", MAX_EF)


def unit(v, dim: int, what: str) -> np.ndarray:
    """A finite non-zero vector of `dim` floats, L2-normalised as float32."""
    if type(v) is np.ndarray and v.dtype == np.float32 and v.shape == (dim,):
        # Fast path for the common query: a finite sum of squares proves every
        # element finite (NaN/Inf propagate), so one dot product checks it all.
        n2 = float(v.dot(v))
        if 0.0 < n2 < math.inf:
            return v * (1.0 / math.sqrt(n2))  # a Python float keeps the result float32
    try:
        a = np.asarray(v, dtype=np.float64)
    except (TypeError, ValueError) as e:
        raise InvalidArgument(f"{what} must be numeric: {e}") from None
    if a.ndim == 2 and a.shape[0] == 1:
        a = a[0]
    if a.shape != (dim,):
        raise InvalidArgument(f"{what} has shape {a.shape}; the catalogue holds {dim}-d vectors")
    if not np.isfinite(a).all():
        raise InvalidArgument(f"{what} contains NaN or Inf")
    norm = np.linalg.norm(a)
    if norm == 0 or not np.isfinite(norm):
        raise InvalidArgument(f"{what} is zero (or its norm overflows); cosine needs a direction")
    return (a / norm).astype(np.float32)
