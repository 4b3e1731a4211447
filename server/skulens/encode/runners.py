"""Runtimes behind one `run(feed) -> embeddings` call (clip-as-service's executors):
`OrtRunner`, ONNX Runtime in this process (the embedded default; serving needs no
torch), and `TritonRunner`, the same model on a Triton server over gRPC
(`encode/triton.py` starts one). Both serve the files of one model folder
(`model_repo.py`).
"""

from __future__ import annotations

import os
import time

import numpy as np

from ..errors import InvalidArgument, Unavailable
from . import model_repo


class OrtRunner:
    """ONNX Runtime in this process, as two sessions of one model (bench/encoder_bench.py measured
    why): a query (batch < BATCH_ROWS) runs on one intra-op thread that does not spin, so it costs
    one core for its own time and leaves the other cores to gRPC and the other queries (ORT's
    default, a spinning thread per core, burned ~2.5x the CPU for a few percent less latency); a
    batch (upserts) runs on `threads` non-spinning threads (default: the usable cores), built on
    first use."""

    BATCH_ROWS = 8

    def __init__(self, path: str, threads: int | None = None, spin: bool = False):
        self.path, self.threads = path, threads
        # spin: ORT's own default for queries (a spinning thread per core): ~35% less latency for a
        # lone query on an idle machine, 2.5x its CPU, which other requests then lack.
        self.session = ort_session(path, None, spin=True) if spin else ort_session(path, 1)
        self._batch = None
        self.inputs = [i.name for i in self.session.get_inputs()]

    def run(self, feed: dict) -> np.ndarray:
        feed = {k: v for k, v in feed.items() if k in self.inputs}
        n = len(next(iter(feed.values())))
        s = self.session
        if n >= self.BATCH_ROWS and (self.threads or 0) != 1:
            if self._batch is None:
                from ..affinity import usable
                self._batch = ort_session(self.path, self.threads or usable())
            s = self._batch
        return s.run(None, feed)[0]


class TritonRunner:
    """A model on one or several Triton servers (gRPC; `url` is "host:port[,host:port...]"): same
    inputs, its `embedding` output. Calls go round-robin over the endpoints; one that fails to
    answer is ejected for EJECT_S and the call goes to the next, all within `timeout` seconds, so a
    Triton replica stopped mid-run costs no query. Inputs the model refuses are INVALID_ARGUMENT."""

    DTYPES = {np.dtype(np.float32): "FP32", np.dtype(np.int64): "INT64", np.dtype(object): "BYTES"}
    EJECT_S = 2.0

    def __init__(self, url: str, model: str, timeout: float = 10.0):
        import tritonclient.grpc as tc
        from tritonclient.utils import InferenceServerException
        self._tc, self._failed, self.model, self.timeout = tc, InferenceServerException, model, timeout
        self.urls = [u.strip() for u in url.split(",") if u.strip()]
        self.clients = [tc.InferenceServerClient(u) for u in self.urls]
        self._ejected = [0.0] * len(self.clients)
        self._next = 0
        ready, why = None, []
        for i, (u, c) in enumerate(zip(self.urls, self.clients)):
            try:
                if c.is_model_ready(model):
                    ready = ready if ready is not None else c
                    continue
                why.append(f"{u} has no ready model {model!r}")
            except Exception as e:  # noqa: BLE001 - InferenceServerException: say which server
                why.append(f"Triton at {u} is not reachable: {e}")
            self._ejected[i] = time.monotonic() + self.EJECT_S  # tried again after a while
        if ready is None:
            raise ConnectionError("; ".join(why) or "no Triton endpoint given")
        self.inputs = [i.name for i in ready.get_model_metadata(model).inputs]
        # Triton refuses requests over the model's max_batch_size: larger batches go in pieces.
        self.max_batch = ready.get_model_config(model).config.max_batch_size or None

    def _order(self) -> list[int]:
        start = self._next = (self._next + 1) % len(self.clients)
        now = time.monotonic()
        idx = [(start + k) % len(self.clients) for k in range(len(self.clients))]
        return [i for i in idx if self._ejected[i] <= now] + [i for i in idx if self._ejected[i] > now]

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
        end, last = time.monotonic() + self.timeout, None
        for i in self._order():
            left = end - time.monotonic()
            if left <= 0:
                break
            try:
                return self.clients[i].infer(self.model, ins, outputs=out, client_timeout=left).as_numpy("embedding")
            except self._failed as e:
                if "INVALID_ARG" in str(e.status()):   # the model refused the input (bytes it cannot decode)
                    raise InvalidArgument(f"{self.model} on Triton: {e.message()}") from None
                self._ejected[i], last = time.monotonic() + self.EJECT_S, e
        # No endpoint answered: the caller may retry (UNAVAILABLE); nothing of the request was applied.
        why = last.message() if last is not None else f"no answer within {self.timeout:.1f} s"
        raise Unavailable(f"the {self.model} on Triton did not answer: {why}")


def runner(folder: str, threads: int | None = None, triton: str | None = None, spin: bool = False):
    """The runtime for the model in folder: ONNX Runtime here, or the same model on Triton."""
    if triton:
        return TritonRunner(triton, os.path.basename(os.path.normpath(folder)))
    return OrtRunner(model_repo.model_path(folder), threads, spin)


def ort_session(path: str, threads: int | None = None, spin: bool = False):
    """An ONNX Runtime session of the serving settings (training measures its exports with it)."""
    import onnxruntime as ort
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    if threads:
        opts.intra_op_num_threads = threads
    # Waiting threads sleep instead of spinning: a spinning pool takes the cores that gRPC and the
    # other requests need (bench/encoder_bench.py: CPU per query).
    if not spin:
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    # GPU providers first when this onnxruntime build and machine have them.
    wanted = ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"]
    providers = [p for p in wanted if p in ort.get_available_providers()]
    return ort.InferenceSession(path, sess_options=opts, providers=providers)
