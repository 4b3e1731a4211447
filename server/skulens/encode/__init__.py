"""Encoders: image or text in, L2-normalised vector out, behind one interface
(`embed(batch)`, `embed_request(one, timings)`, `dim`, `name`, `warm_up()`).

`ImageEncoder` and `TextEncoder` do the pre- and post-processing; the network runs
on a runtime behind one `run(feed)` call (`runners.py`): ONNX Runtime in process, or
Triton. A model is a Triton folder (`model_repo.py` owns the format), so both
runtimes serve the same files.
"""

from __future__ import annotations

import os

from ..limits import MAX_IMAGE_BYTES, MAX_PIXELS
from . import model_repo
from .cache import QueryCache
from .image import ImageEncoder
from .runners import OrtRunner, TritonRunner, ort_session, runner
from .text import TextEncoder


def load(repo: str, threads: int | None = None, triton: str | None = None) -> dict:
    """The encoders found in a model repository: {"image": ..., "text": ...}; with `triton`
    (host:port of its gRPC endpoint) the networks run there, the pre-processing here."""
    out = {}
    for kind, name, cls in (("image", model_repo.IMAGE, ImageEncoder), ("text", model_repo.TEXT, TextEncoder)):
        folder = os.path.join(repo, name)
        if model_repo.has_model(folder):
            out[kind] = cls(folder, threads, triton=triton)
    return out


__all__ = ["load", "ImageEncoder", "TextEncoder", "QueryCache", "OrtRunner", "TritonRunner", "ort_session",
           "runner", "model_repo", "MAX_IMAGE_BYTES", "MAX_PIXELS"]
