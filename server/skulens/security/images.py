"""Which image bytes the server decodes, decided from the header before any pixel is decoded.

Pillow can read dozens of formats (and EPS would start Ghostscript); the server decodes only an
allow-list (JPEG, PNG and WebP unless configured), refuses images over a byte size, a pixel
count or an aspect ratio from the header alone (decompression bombs declare 100k x 100k pixels
in a few hundred bytes; a 1 x 34,000,000 PNG of 66 KB would take a gigabyte to resize), and says
which limit, with the right status, without echoing Pillow's internals.
"""

from __future__ import annotations

import io
import re
import warnings
from dataclasses import dataclass

from ..errors import InvalidArgument, ResourceExhausted
from ..limits import IMAGE_FORMATS, MAX_ASPECT, MAX_IMAGE_BYTES, MAX_PIXELS


@dataclass(frozen=True)
class ImagePolicy:
    formats: tuple[str, ...] = IMAGE_FORMATS   # Pillow format names
    max_bytes: int = MAX_IMAGE_BYTES
    max_pixels: int = MAX_PIXELS
    max_aspect: float = MAX_ASPECT             # longer side / shorter side

    @classmethod
    def parse_formats(cls, text: str) -> tuple[str, ...]:
        """"jpeg, png,webp" -> ("JPEG", "PNG", "WEBP"), checked against the formats Pillow knows."""
        from PIL import Image
        Image.init()
        names = tuple(dict.fromkeys(f.strip().upper() for f in text.split(",") if f.strip()))
        unknown = [f for f in names if f not in Image.OPEN]
        if not names or unknown:
            raise InvalidArgument(f"image formats {unknown or text!r}: choose from {sorted(Image.OPEN)}")
        return names

    def open(self, data: bytes):
        """The image, opened (header read, no pixels decoded), or a clear refusal."""
        from PIL import Image, UnidentifiedImageError
        if len(data) > self.max_bytes:
            raise ResourceExhausted(f"image of {len(data)} bytes is over the {self.max_bytes}-byte limit")
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # our own cap applies
                im = Image.open(io.BytesIO(data), formats=list(self.formats))
        except Image.DecompressionBombError:
            raise ResourceExhausted(f"image declares more than {self.max_pixels} pixels") from None
        except UnidentifiedImageError:
            raise InvalidArgument(f"cannot decode the image ({len(data)} bytes): not a "
                                  f"{', '.join(self.formats)} image") from None
        except (OSError, SyntaxError, ValueError) as e:
            raise InvalidArgument(f"cannot decode the image ({len(data)} bytes): {scrub(str(e))}") from None
        w, h = im.size
        if w <= 0 or h <= 0:
            raise InvalidArgument(f"image of {w}x{h} pixels has no pixels")
        if w * h > self.max_pixels:
            raise ResourceExhausted(f"image of {w}x{h} pixels is over the {self.max_pixels}-pixel limit")
        if max(w, h) > self.max_aspect * min(w, h):
            raise InvalidArgument(f"image of {w}x{h} pixels is more than {self.max_aspect:g} times longer than "
                                  "wide")
        return im


_ADDRESS = re.compile(r"<[^<>]*\bat 0x[0-9a-fA-F]+>")


def scrub(message: str) -> str:
    """A message fit to send to a caller: no object reprs with heap addresses."""
    return _ADDRESS.sub("<object>", message)
