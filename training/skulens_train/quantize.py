"""Static int8 quantisation of the exported image encoder (ONNX Runtime, QDQ, per-channel weights),
calibrated on catalogue pictures and scanner views, and measured against the fp32 model: vector
agreement on real images, retrieval R@1, and ONNX Runtime latency."""

from __future__ import annotations

import os
import time

import numpy as np


class _Reader:
    """ONNX Runtime's calibration-data protocol over normalised pixel batches."""

    def __init__(self, batches):
        self._it = iter(batches)

    def get_next(self):
        x = next(self._it, None)
        return None if x is None else {"pixels": x}

    def rewind(self):  # pragma: no cover - asked for by some calibrators
        pass


def calibration_batches(size: int, n: int = 256, batch: int = 32):
    from .data import fashion_mnist
    from .models import normalise_pixels
    from skulens.data.views import ViewMaker
    import torch
    items = fashion_mnist("train", size, n)
    views = ViewMaker(items.raw, size, seed=99)(np.arange(len(items)))
    px = np.concatenate([items.clean, views])
    px = px[np.random.default_rng(0).permutation(len(px))]
    return [normalise_pixels(torch.from_numpy(px[a:a + batch])).contiguous().numpy()
            for a in range(0, len(px), batch)]


def quantize_image(fp32_path: str, out_path: str, size: int) -> None:
    from onnxruntime.quantization import QuantFormat, QuantType, quant_pre_process, quantize_static
    pre = out_path + ".pre.onnx"
    quant_pre_process(fp32_path, pre)
    quantize_static(pre, out_path, _Reader(calibration_batches(size)), quant_format=QuantFormat.QDQ,
                    per_channel=True, activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8)
    os.remove(pre)


def ort_latency_ms(path: str, size: int, batch: int = 1, repeats: int = 50) -> float:
    from skulens.encode import ort_session
    s = ort_session(path, threads=1)
    x = np.random.default_rng(0).standard_normal((batch, 3, size, size)).astype(np.float32)
    for _ in range(5):
        s.run(None, {"pixels": x})
    t0 = time.perf_counter()
    for _ in range(repeats):
        s.run(None, {"pixels": x})
    return (time.perf_counter() - t0) / repeats * 1e3


def compare(fp32_path: str, int8_path: str, size: int, catalogue: int = 2000, queries: int = 2000) -> dict:
    """fp32 against int8 on the same benchmark, both through ONNX Runtime."""
    from skulens.encode import ort_session
    from .evaluate import Benchmark
    from .models import normalise_pixels
    import torch
    bench = Benchmark(size, catalogue, queries)
    out = {}
    vecs = {}
    for name, path in (("fp32", fp32_path), ("int8", int8_path)):
        s = ort_session(path, threads=1)

        def emb(px, d=None, m=None, s=s):
            return np.concatenate([s.run(None, {"pixels": normalise_pixels(torch.from_numpy(px[a:a + 256]))
                                                .contiguous().numpy()})[0] for a in range(0, len(px), 256)])
        r = bench.run(None, name, embed_fn=emb)
        vecs[name] = emb(bench.test.clean[:500])
        out[name] = {k: r[k] for k in ("instance R@1", "instance R@10", "category R@1", "view category R@1")}
        out[name]["ORT ms/image batch 1"] = ort_latency_ms(path, size)
        out[name]["ORT ms/image batch 32"] = ort_latency_ms(path, size, 32) / 32
        out[name]["MiB"] = os.path.getsize(path) / 2**20
    cos = (vecs["fp32"] * vecs["int8"]).sum(1)
    out["cosine int8 vs fp32 (500 catalogue pictures)"] = {"min": float(cos.min()), "mean": float(cos.mean())}
    return out
