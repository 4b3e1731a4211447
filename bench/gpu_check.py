"""The GPU check (run by bench/gpu_check.sh on a machine with an NVIDIA GPU): TensorRT engines of the
served image encoder in fp16 and int8 (from a QDQ graph quantised here), parity against fp32 ONNX
Runtime on real photos, and batch 1/8/64 timings; through tritonclient too when a tritonserver with
the tensorrt backend is on PATH. Writes one JSON.

    python bench/gpu_check.py --model-repo model_repo --out /tmp/gpu_check
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "server"))

from skulens.encode import ImageEncoder, model_repo, tensorrt  # noqa: E402

PHOTOS = ("astronaut", "coffee", "chelsea", "rocket", "camera", "coins", "cat", "hubble_deep_field",
          "immunohistochemistry", "motorcycle_left")


def photos(enc: ImageEncoder, n: int = 64) -> np.ndarray:
    """n preprocessed real pictures: scikit-image's photos, shifted crops and mirror images of them."""
    from PIL import Image
    from skimage import data
    rng = np.random.default_rng(0)
    ims = []
    for name in PHOTOS:
        try:
            a = getattr(data, name)()
        except Exception:  # noqa: BLE001 - a photo this scikit-image lacks
            continue
        ims.append(Image.fromarray(a if a.ndim == 3 else np.stack([a] * 3, -1)).convert("RGB"))
    out = []
    while len(out) < n:
        im = ims[len(out) % len(ims)]
        w, h = im.size
        c = rng.uniform(0.6, 1.0)
        x0, y0 = int(rng.uniform(0, (1 - c) * w)), int(rng.uniform(0, (1 - c) * h))
        crop = im.crop((x0, y0, x0 + int(c * w), y0 + int(c * h)))
        out.append(crop.transpose(Image.FLIP_LEFT_RIGHT) if rng.random() < 0.5 else crop)
    return enc.preprocess(out)


def qdq(fp32: str, out: str, x: np.ndarray) -> None:
    """The int8 QDQ graph TensorRT quantises explicitly from (training/REPORT.md's best variant)."""
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    class Reader:
        def __init__(self):
            self.it = iter([{"pixels": x[i:i + 8]} for i in range(0, len(x), 8)])

        def get_next(self):
            return next(self.it, None)
    quantize_static(fp32, out, Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                    activation_type=QuantType.QInt8, weight_type=QuantType.QInt8,
                    calibrate_method=CalibrationMethod.Percentile, op_types_to_quantize=["Conv"],
                    extra_options={"CalibPercentile": 99.999, "ActivationSymmetric": True})


class Engine:
    """A TensorRT plan run with cupy buffers."""

    def __init__(self, plan: str):
        import cupy as cp
        import tensorrt as trt
        self.cp = cp
        self.engine = trt.Runtime(trt.Logger(trt.Logger.WARNING)).deserialize_cuda_engine(open(plan, "rb").read())
        self.ctx = self.engine.create_execution_context()
        self.stream = cp.cuda.Stream()

    def run(self, x: np.ndarray) -> np.ndarray:
        cp = self.cp
        dx = cp.asarray(x)
        self.ctx.set_input_shape("pixels", x.shape)
        out = cp.empty(tuple(self.ctx.get_tensor_shape("embedding")), dtype=cp.float32)
        self.ctx.set_tensor_address("pixels", dx.data.ptr)
        self.ctx.set_tensor_address("embedding", out.data.ptr)
        self.ctx.execute_async_v3(self.stream.ptr)
        self.stream.synchronize()
        return cp.asnumpy(out)


def timed(fn, x: np.ndarray, runs: int = 50) -> float:
    for _ in range(5):
        fn(x)
    ts = []
    for _ in range(runs):
        t = time.perf_counter()
        fn(x)
        ts.append(time.perf_counter() - t)
    return float(np.median(ts)) * 1e3


def cosines(a: np.ndarray, b: np.ndarray) -> dict:
    a = a / np.linalg.norm(a, axis=1, keepdims=True)
    b = b / np.linalg.norm(b, axis=1, keepdims=True)
    c = (a * b).sum(1)
    return {"min": float(c.min()), "mean": float(c.mean())}


def through_triton(trt_repo: str, x: np.ndarray) -> dict:
    """Batch 1/8/64 through tritonclient, when a tritonserver with the tensorrt backend is here."""
    import shutil
    binary = shutil.which("tritonserver")
    if not binary or not os.path.isdir("/opt/tritonserver/backends/tensorrt"):
        return {"skipped": "no tritonserver with the tensorrt backend on this machine (an NGC Triton container has one)"}
    import tritonclient.grpc as tc
    repo = os.path.join(trt_repo, "triton")
    os.makedirs(repo, exist_ok=True)
    src = os.path.join(trt_repo, model_repo.IMAGE)
    dst = os.path.join(repo, model_repo.IMAGE)
    if not os.path.exists(dst):
        shutil.copytree(src, dst)
    p = subprocess.Popen([binary, f"--model-repository={repo}", "--grpc-port=8701", "--allow-http=false",
                          "--allow-metrics=false"], stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    try:
        c = tc.InferenceServerClient("127.0.0.1:8701")
        for _ in range(300):
            try:
                if c.is_model_ready(model_repo.IMAGE):
                    break
            except Exception:  # noqa: BLE001 - not up yet
                pass
            time.sleep(0.2)
        out = {}
        for b in (1, 8, 64):
            inp = tc.InferInput("pixels", [b, *x.shape[1:]], "FP32")
            inp.set_data_from_numpy(np.ascontiguousarray(x[:b]))
            out[f"batch {b} ms"] = timed(lambda _: c.infer(model_repo.IMAGE, [inp]), x, 30)
        return out
    finally:
        p.terminate()
        p.wait(30)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model-repo", default="model_repo")
    ap.add_argument("--out", default="/tmp/gpu_check")
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)
    result = {"host": platform.node(), "started": time.strftime("%Y-%m-%d %H:%M:%S")}
    try:
        result["gpu"] = subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version,memory.total",
                                        "--format=csv,noheader"], capture_output=True, text=True).stdout.strip()
    except OSError:
        result["gpu"] = None
    why = tensorrt.unavailable()
    if why:
        result["error"] = why
        Path(args.out, "gpu_check.json").write_text(json.dumps(result, indent=1))
        print(why)
        raise SystemExit(2)
    import onnxruntime as ort
    folder = os.path.join(args.model_repo, model_repo.IMAGE)
    enc = ImageEncoder(folder)
    x = photos(enc)
    fp32_path = model_repo.model_path(folder)
    cpu = ort.InferenceSession(fp32_path, providers=["CPUExecutionProvider"])
    want = cpu.run(None, {"pixels": x})[0]
    int8_onnx = os.path.join(args.out, "image_int8_qdq.onnx")
    qdq(fp32_path, int8_onnx, x)
    cache = os.path.join(args.out, "timing.cache")
    for precision, onnx_path in (("fp16", fp32_path), ("int8", int8_onnx)):
        plan = os.path.join(args.out, f"image_{precision}.plan")
        t0 = time.perf_counter()
        info = tensorrt.build_engine(onnx_path, plan, precision, cache)
        info["build_s"] = time.perf_counter() - t0
        e = Engine(plan)
        got = np.concatenate([e.run(x[i:i + 8]) for i in range(0, len(x), 8)])
        info["cosine_vs_fp32_cpu"] = cosines(got, want)
        info["parity_target"] = 0.999 if precision == "fp16" else 0.99
        info["parity_met"] = info["cosine_vs_fp32_cpu"]["min"] >= info["parity_target"]
        info["ms"] = {f"batch {b}": timed(e.run, np.ascontiguousarray(x[:b])) for b in (1, 8, 64)}
        result[precision] = info
        print(precision, json.dumps(info, indent=1), flush=True)
    result["onnxruntime_cpu_ms"] = {f"batch {b}": timed(lambda a: cpu.run(None, {"pixels": a}), np.ascontiguousarray(x[:b]))
                                    for b in (1, 8, 64)}
    trt_repo = os.path.join(args.out, "repo")
    tensorrt.export(args.model_repo, trt_repo, "fp16")
    result["triton"] = through_triton(trt_repo, x)
    result["finished"] = time.strftime("%Y-%m-%d %H:%M:%S")
    Path(args.out, "gpu_check.json").write_text(json.dumps(result, indent=1))
    print(f"wrote {args.out}/gpu_check.json")


if __name__ == "__main__":
    main()
