"""Runtimes behind one `run(feed) -> embeddings` call (clip-as-service's executors):
`OrtRunner`, ONNX Runtime in this process (the embedded default; serving needs no
torch), and `TritonRunner`, the same model on a Triton server over gRPC
(`encode/triton.py` starts one). Both serve the files of one model folder
(`model_repo.py`).
"""

from __future__ import annotations

import os

import numpy as np

from ..errors import Unavailable
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
