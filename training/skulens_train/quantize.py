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


# The int8 variants measured by `python -m skulens_train.quantize` (training/REPORT.md "int8").
VARIANTS = {
    "minmax, every op": dict(),
    "percentile 99.999, every op": dict(calibrate="percentile"),
    "entropy, every op": dict(calibrate="entropy"),
    "minmax, convs and the head only (swish in float)": dict(op_types=["Conv", "Gemm"]),
    "percentile, convs only, stem and head in float": dict(calibrate="percentile", op_types=["Conv"],
                                                           exclude=["/backbone/_conv_stem/Conv"]),
}


def quantize_image(fp32_path: str, out_path: str, size: int, calibrate: str = "minmax",
                   op_types: list[str] | None = None, exclude: list[str] = ()) -> None:
    from onnxruntime.quantization import (CalibrationMethod, QuantFormat, QuantType, quant_pre_process,
                                          quantize_static)
    pre = out_path + ".pre.onnx"
    quant_pre_process(fp32_path, pre)
    method = {"minmax": CalibrationMethod.MinMax, "percentile": CalibrationMethod.Percentile,
              "entropy": CalibrationMethod.Entropy}[calibrate]
    quantize_static(pre, out_path, _Reader(calibration_batches(size)), quant_format=QuantFormat.QDQ,
                    per_channel=True, activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                    calibrate_method=method, op_types_to_quantize=op_types, nodes_to_exclude=list(exclude),
                    extra_options={"CalibPercentile": 99.999} if calibrate == "percentile" else None)
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


def compare(fp32_path: str, int8_path: str, size: int, catalogue: int = 2000, queries: int = 2000,
            bench=None, others: dict | None = None) -> dict:
    """fp32 against int8 (and `others`: name -> path) on the same benchmark, all through ONNX Runtime."""
    from skulens.encode import ort_session
    from .evaluate import Benchmark
    from .models import normalise_pixels
    import torch
    bench = bench or Benchmark(size, catalogue, queries)
    out = {}
    vecs = {}
    for name, path in (("fp32", fp32_path), ("int8", int8_path), *(others or {}).items()):
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
    for name in vecs:
        if name != "fp32":
            cos = (vecs["fp32"] * vecs[name]).sum(1)
            out[name]["cosine vs fp32 (500 catalogue pictures)"] = {"min": float(cos.min()), "mean": float(cos.mean())}
    return out


def quantize_text(fp32_path: str, out_path: str) -> None:
    """Dynamic int8 for the transformer (weights int8, activations quantised per call): its
    MatMuls carry the cost, and their activations vary too much per input for static scales."""
    from onnxruntime.quantization import QuantType, quant_pre_process, quantize_dynamic
    pre = out_path + ".pre.onnx"
    quant_pre_process(fp32_path, pre, skip_symbolic_shape=True)
    quantize_dynamic(pre, out_path, weight_type=QuantType.QInt8, op_types_to_quantize=["MatMul"], per_channel=False)
    os.remove(pre)


def compare_text(image_folder: str, text_folder: str, int8_path: str) -> dict:
    """The text encoder fp32 (text_folder's model) against int8: cosine on titles, latency per
    title, and precision@10 of each category name (plain and "a photo of a ...") against the 10k
    test catalogue's image embeddings (image_folder's model)."""
    from skulens.data.datasets import CLASSES, load
    from skulens.encode import ImageEncoder, TextEncoder, model_repo
    from skulens.encode.runners import OrtRunner
    from skulens.data.preprocess import fit_square
    from PIL import Image
    img = ImageEncoder(image_folder)
    raw, labels = load("test")
    px = np.stack([fit_square(Image.fromarray(r), img.size) for r in raw])
    mean, std = img.mean[0], img.std[0]
    g = np.concatenate([img.encode(((px[a:a + 500].transpose(0, 3, 1, 2).astype(np.float32) - mean) / std))
                        for a in range(0, len(px), 500)])
    fp32 = TextEncoder(text_folder)
    int8 = TextEncoder(text_folder)
    int8.runner = OrtRunner(int8_path)
    queries = [(c, i) for i, c in enumerate(CLASSES)] + [(f"a photo of a {c.lower()}", i) for i, c in enumerate(CLASSES)]
    out = {}
    vec = {}
    for name, enc in (("fp32", fp32), ("int8", int8)):
        v = enc.embed([q for q, _ in queries])
        vec[name] = v
        top = np.argsort(-(v @ g.T), axis=1)[:, :10]
        prec = [(labels[t] == i).mean() for t, (_, i) in zip(top, queries)]
        enc.embed(["warm up"])
        ts = []
        for q, _ in queries * 3:
            t0 = time.perf_counter()
            enc.embed([q])
            ts.append(time.perf_counter() - t0)
        out[name] = {"precision@10 mean": float(np.mean(prec)), "precision@10 min": float(np.min(prec)),
                     "ms/title p50": float(np.median(ts) * 1e3),
                     "MiB": os.path.getsize(int8_path if name == "int8" else model_repo.model_path(text_folder)) / 2**20}
    cos = (vec["fp32"] * vec["int8"]).sum(1)
    out["int8"]["cosine vs fp32 (titles)"] = {"min": float(cos.min()), "mean": float(cos.mean())}
    return out


def main() -> None:
    """python -m skulens_train.quantize MODEL_REPO [OUT.json]: every variant of VARIANTS quantised
    from MODEL_REPO's fp32 image encoder and measured against it (10k catalogue, 10k views)."""
    import json
    import sys
    import tempfile
    from skulens.encode import model_repo
    from .evaluate import Benchmark
    repo, out = sys.argv[1], sys.argv[2] if len(sys.argv) > 2 else "training/int8_variants.json"
    folder = os.path.join(repo, model_repo.IMAGE)
    size = int(model_repo.read_meta(folder)["input_size"])
    fp32 = model_repo.model_path(folder)
    tmp = tempfile.mkdtemp()
    paths = {}
    for i, (name, kw) in enumerate(VARIANTS.items()):
        paths[name] = os.path.join(tmp, f"v{i}.onnx")
        quantize_image(fp32, paths[name], size, **kw)
        print(f"quantised: {name}", flush=True)
    first, *rest = paths
    res = compare(fp32, paths[first], size, bench=Benchmark(size, 10_000, 10_000),
                  others={n: paths[n] for n in rest})
    res[first] = res.pop("int8")
    with open(out, "w") as f:
        json.dump({"model": model_repo.read_meta(folder)["name"], "variants": VARIANTS, "measured": res}, f, indent=1)
    for name, r in res.items():
        print(f"{name:50s} " + "  ".join(f"{k} {v:.3f}" for k, v in r.items() if isinstance(v, float)))


if __name__ == "__main__":
    main()
