"""Triton python-backend model `preprocess`: image bytes (JPEG/PNG/WebP) -> normalised pixels, the
first step of the `image_pipeline` ensemble (model_repo.write_image_pipeline), so a client can send
raw image bytes to Triton.

It decodes as skulens does (Pillow, JPEG draft mode, EXIF orientation) and resizes with the very
function training and serving use (`skulens/data/preprocess.py`, copied beside this file as
`skulens_preprocess.py`: Triton's stub imports nothing of skulens). Bytes Pillow will not decode, or
larger than `max_pixels`, get an error response of their own; the rest of the batch is answered.
"""

import io
import json
import os
import sys

import numpy as np
import triton_python_backend_utils as pb_utils
from PIL import Image, ImageOps

sys.path.insert(0, os.path.dirname(__file__))
from skulens_preprocess import fit_square  # noqa: E402


class TritonPythonModel:
    def initialize(self, args):
        p = {k: v["string_value"] for k, v in json.loads(args["model_config"]).get("parameters", {}).items()}
        self.size = int(p["input_size"])
        self.mean = np.asarray(json.loads(p["mean"]), np.float32).reshape(3, 1, 1)
        self.std = np.asarray(json.loads(p["std"]), np.float32).reshape(3, 1, 1)
        self.max_pixels = int(p.get("max_pixels", "40000000"))
        Image.MAX_IMAGE_PIXELS = self.max_pixels

    def _pixels(self, data: bytes) -> np.ndarray:
        im = Image.open(io.BytesIO(data))
        if im.width * im.height > self.max_pixels:
            raise ValueError(f"{im.width}x{im.height} pixels is over {self.max_pixels}")
        if im.format == "JPEG":
            im.draft("RGB", (self.size, self.size))
        im.load()
        im = ImageOps.exif_transpose(im)
        im = im if im.mode in ("RGB", "L") else im.convert("RGB")
        px = fit_square(im, self.size).transpose(2, 0, 1).astype(np.float32)
        return (px - self.mean) / self.std

    def execute(self, requests):
        out = []
        for r in requests:
            blobs = pb_utils.get_input_tensor_by_name(r, "image").as_numpy().reshape(-1)
            try:
                x = np.stack([self._pixels(bytes(b)) for b in blobs])
                out.append(pb_utils.InferenceResponse(output_tensors=[pb_utils.Tensor("pixels", x)]))
            except Exception as e:  # noqa: BLE001 - the caller's bytes: an error for this request only
                err = pb_utils.TritonError(f"cannot decode the image: {e}", getattr(pb_utils.TritonError, "INVALID_ARG", 3))
                out.append(pb_utils.InferenceResponse(error=err))
        return out
