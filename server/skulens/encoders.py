"""Encoders: image or text in, L2-normalised vector out, behind one interface.

`ImageEncoder` and `TextEncoder` do the pre- and post-processing (decode, resize,
tokenise); the network runs on a runtime behind one `run(feed)` call (clip-as-service's
executors): `OrtRunner`, ONNX Runtime in process (the embedded default; serving needs
no torch), or `TritonRunner`, a Triton server over gRPC (skulens.triton starts one). A
model is a Triton folder, `model_repo/<name>/1/model.onnx` beside `config.pbtxt`, so both
runtimes serve the same files.

Image requests are decoded with Pillow's draft mode (JPEG decodes straight to
near the target size), EXIF orientation is honoured, and identical image bytes
reuse their embedding from a bounded LRU cache (content hash).
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import threading
import time
from collections import OrderedDict

import numpy as np

from .errors import InvalidArgument, ResourceExhausted, Unavailable

MAX_IMAGE_BYTES = 8 << 20
MAX_PIXELS = 40_000_000  # decompression bombs are refused before decoding


class QueryCache:
    """Bounded LRU of content hash -> embedding, with its hit rate."""

    def __init__(self, size: int = 10_000):
        self.size = size
        self._d: OrderedDict[bytes, np.ndarray] = OrderedDict()
        self._lock = threading.Lock()
        self.hits = self.misses = 0

    def get(self, key: bytes):
        with self._lock:
            v = self._d.get(key)
            if v is None:
                self.misses += 1
                return None
            self._d.move_to_end(key)
            self.hits += 1
            return v

    def put(self, key: bytes, v: np.ndarray) -> None:
        if self.size <= 0:
            return
        with self._lock:
            self._d[key] = v
            self._d.move_to_end(key)
            while len(self._d) > self.size:
                self._d.popitem(last=False)

    def stats(self) -> dict:
        n = self.hits + self.misses
        return {"size": len(self._d), "capacity": self.size, "hits": self.hits, "misses": self.misses,
                "hit_rate": self.hits / n if n else 0.0}


class OrtRunner:
    """ONNX Runtime in this process."""

    def __init__(self, path: str, threads: int | None = None):
        self.session = _session(path, threads)
        self.inputs = [i.name for i in self.session.get_inputs()]

    def run(self, feed: dict) -> np.ndarray:
        return self.session.run(None, {k: v for k, v in feed.items() if k in self.inputs})[0]


class TritonRunner:
    """A model on a Triton server (gRPC): same inputs, its `embedding` output."""

    DTYPES = {np.dtype(np.float32): "FP32", np.dtype(np.int64): "INT64"}

    def __init__(self, url: str, model: str, timeout: float = 10.0):
        import tritonclient.grpc as tc
        from tritonclient.utils import InferenceServerException
        self._tc, self._failed, self.model, self.timeout = tc, InferenceServerException, model, timeout
        self.client = tc.InferenceServerClient(url)
        try:
            ready = self.client.is_model_ready(model)
        except Exception as e:  # noqa: BLE001 - InferenceServerException: say which server
            raise ConnectionError(f"Triton at {url} is not reachable: {e}") from None
        if not ready:
            raise ConnectionError(f"Triton at {url} has no ready model {model!r}")
        self.inputs = [i.name for i in self.client.get_model_metadata(model).inputs]
        # Triton refuses requests over the model's max_batch_size: larger batches go in pieces.
        self.max_batch = self.client.get_model_config(model).config.max_batch_size or None

    def run(self, feed: dict) -> np.ndarray:
        n = len(next(iter(feed.values())))
        if self.max_batch and n > self.max_batch:
            return np.concatenate([self.run({k: v[i:i + self.max_batch] for k, v in feed.items()})
                                   for i in range(0, n, self.max_batch)])
        ins = []
        for name in self.inputs:
            x = np.ascontiguousarray(feed[name])
            t = self._tc.InferInput(name, list(x.shape), self.DTYPES[x.dtype])
            t.set_data_from_numpy(x)
            ins.append(t)
        out = [self._tc.InferRequestedOutput("embedding")]
        try:
            return self.client.infer(self.model, ins, outputs=out, client_timeout=self.timeout).as_numpy("embedding")
        except self._failed as e:
            # The model server is down or overloaded: the caller may retry (UNAVAILABLE), and
            # nothing of the request has been applied.
            raise Unavailable(f"the {self.model} on Triton did not answer: {e.message()}") from None


def _runner(folder: str, threads: int | None, triton: str | None):
    if triton:
        return TritonRunner(triton, os.path.basename(os.path.normpath(folder)))
    return OrtRunner(os.path.join(folder, "1", "model.onnx"), threads)


def _session(path: str, threads: int | None = None):
    import onnxruntime as ort
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    if threads:
        opts.intra_op_num_threads = threads
    # GPU providers first when this onnxruntime build and machine have them.
    wanted = ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"]
    providers = [p for p in wanted if p in ort.get_available_providers()]
    return ort.InferenceSession(path, sess_options=opts, providers=providers)


def _meta(folder: str) -> dict:
    p = os.path.join(folder, "skulens.json")
    if not os.path.exists(p):
        raise FileNotFoundError(f"{p} is missing: export the models with `make models` (skulens-train export)")
    with open(p) as f:
        return json.load(f)


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


class ImageEncoder:
    """An exported image model: image bytes in, unit vectors out."""

    kind = "image"

    def __init__(self, folder: str, threads: int | None = None, cache_size: int = 10_000,
                 triton: str | None = None):
        meta = _meta(folder)
        self.name = meta["name"]
        self.dim = int(meta["dim"])
        self.size = int(meta["input_size"])          # square side the model takes
        self.mean = np.asarray(meta["mean"], np.float32).reshape(1, 3, 1, 1)
        self.std = np.asarray(meta["std"], np.float32).reshape(1, 3, 1, 1)
        self.runner = _runner(folder, threads, triton)
        self.cache = QueryCache(cache_size)

    # -- stages -----------------------------------------------------------------------
    def decode(self, data: bytes):
        """Bytes -> RGB (or grey) PIL image near the model's size (draft mode), upright."""
        from PIL import Image, ImageOps, UnidentifiedImageError
        if len(data) > MAX_IMAGE_BYTES:
            raise ResourceExhausted(f"image of {len(data)} bytes is over the {MAX_IMAGE_BYTES}-byte limit")
        try:
            im = Image.open(io.BytesIO(data))
            if im.width * im.height > MAX_PIXELS:
                raise ResourceExhausted(f"image of {im.width}x{im.height} pixels is over the limit")
            if im.format == "JPEG":
                im.draft("RGB", (self.size, self.size))  # DCT scaling: decode at 1/2..1/8 size
            im.load()  # before the EXIF lookup, which costs 5x more on an unloaded PNG
            im = ImageOps.exif_transpose(im)
            return im if im.mode in ("RGB", "L") else im.convert("RGB")
        except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
            raise InvalidArgument(f"cannot decode the image ({len(data)} bytes): {e}") from None

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

    # -- interface ----------------------------------------------------------------------
    def embed(self, images) -> np.ndarray:
        """Bytes or PIL images -> [B, dim] unit vectors (bytes also fill the query cache,
        so a product's own image finds its embedding ready when it is searched)."""
        images = list(images)
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

    def thumbnail(self, data: bytes, side: int = 128) -> bytes:
        im = self.decode(data)
        im.thumbnail((side, side))
        buf = io.BytesIO()
        im.save(buf, "JPEG", quality=85)
        return buf.getvalue()

    def warm_up(self) -> None:
        self.encode(np.zeros((1, 3, self.size, self.size), np.float32))


class TextEncoder:
    """An exported sentence model, tokenised here with `tokenizers`."""

    kind = "text"
    MAX_CHARS = 2000

    def __init__(self, folder: str, threads: int | None = None, triton: str | None = None):
        from tokenizers import Tokenizer
        meta = _meta(folder)
        self.name = meta["name"]
        self.dim = int(meta["dim"])
        self.max_tokens = int(meta.get("max_tokens", 128))
        self.tokenizer = Tokenizer.from_file(os.path.join(folder, "1", "tokenizer.json"))
        self.tokenizer.enable_truncation(self.max_tokens)
        self.tokenizer.enable_padding()
        self.runner = _runner(folder, threads, triton)

    def embed(self, texts) -> np.ndarray:
        enc = self.tokenizer.encode_batch(list(texts))
        feed = {"input_ids": np.asarray([e.ids for e in enc], np.int64),
                "attention_mask": np.asarray([e.attention_mask for e in enc], np.int64)}
        feed["token_type_ids"] = np.zeros_like(feed["input_ids"])   # BERT-style graphs take it
        return self.runner.run(feed)

    def embed_request(self, text: str, timings=None) -> np.ndarray:
        if not text.strip():
            raise InvalidArgument("the text query is empty")
        if len(text) > self.MAX_CHARS:
            raise InvalidArgument(f"text longer than {self.MAX_CHARS} characters")
        t0 = time.perf_counter_ns()
        v = self.embed([text])[0]
        if timings is not None:
            timings.encode_us = (time.perf_counter_ns() - t0) // 1000
        return v

    def warm_up(self) -> None:
        self.embed(["warm up"])


def load(model_repo: str, threads: int | None = None, triton: str | None = None) -> dict:
    """The encoders found in a model repository: {"image": ..., "text": ...}; with `triton`
    (host:port of its gRPC endpoint) the networks run there, the pre-processing here."""
    out = {}
    for kind, name, cls in (("image", "image_encoder", ImageEncoder), ("text", "text_encoder", TextEncoder)):
        folder = os.path.join(model_repo, name)
        if os.path.exists(os.path.join(folder, "1", "model.onnx")):
            out[kind] = cls(folder, threads, triton=triton)
    return out
