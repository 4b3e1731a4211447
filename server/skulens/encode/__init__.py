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
from ..security.images import ImagePolicy
from . import model_repo
from .cache import QueryCache
from .image import ImageEncoder
from .runners import OrtRunner, TritonRunner, ort_session, runner
from .text import TextEncoder


def load(repo: str, threads: int | None = None, triton: str | None = None, policy: ImagePolicy | None = None,
         spin: bool = False) -> dict:
    """The encoders found in a model repository: {"image": ..., "text": ...}; with `triton`
    (host:port of its gRPC endpoint) the networks run there, the pre-processing here. policy:
    which image bytes are decoded (default: JPEG, PNG, WebP within limits.py's caps). threads: ONNX
    Runtime's threads for batches (default: the usable cores); a query runs on one thread, or with
    `spin` on ORT's spinning pool (runners.OrtRunner says when each pays)."""
    out = {}
    folder = os.path.join(repo, model_repo.IMAGE)
    if model_repo.has_model(folder):
        out["image"] = ImageEncoder(folder, threads, triton=triton, policy=policy, spin=spin)
    folder = os.path.join(repo, model_repo.TEXT)
    if model_repo.has_model(folder):
        out["text"] = TextEncoder(folder, threads, triton=triton, spin=spin)
    return out


__all__ = ["load", "ImageEncoder", "TextEncoder", "QueryCache", "OrtRunner", "TritonRunner", "ort_session",
           "runner", "model_repo", "ImagePolicy", "MAX_IMAGE_BYTES", "MAX_PIXELS"]
