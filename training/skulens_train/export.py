"""Export trained encoders to ONNX in a Triton-style model repository, checked against torch.

model_repo/image_encoder/{config.pbtxt, skulens.json, 1/model.onnx} (the format is
skulens.encode.model_repo's, written through it): uint8-derived normalised
pixels [B, 3, S, S] -> unit vectors; LoRA adapters are merged first. With a text run,
model_repo/text_encoder/: MiniLM + the trained projection in one graph, in the image space.
skulens.json records where the model came from (run config, steps, evaluation); RUN/objectness.json,
scene search's head fitted to this model (skulens-train objectness), goes beside it.
"""

from __future__ import annotations

import json
import os
import shutil

import numpy as np
import torch

from skulens.encode import model_repo as repo_format
from skulens.encode import objectness

from .models import MEAN, STD, normalise_pixels



def real_images(size: int) -> np.ndarray:
    """Photos (scikit-image) and Fashion-MNIST articles, through the server's own preprocessing."""
    from PIL import Image
    from skulens.data.preprocess import fit_square
    import skimage.data as sd
    ims = [fit_square(Image.fromarray(getattr(sd, n)()).convert("RGB"), size) for n in ("chelsea", "coffee", "astronaut")]
    try:
        from skulens.data import datasets
        from skulens.data.views import catalogue_image
        ims += [catalogue_image(a, size) for a in datasets.load("test")[0][:13]]
    except FileNotFoundError:
        pass
    return np.stack(ims)


def min_cosine(a: np.ndarray, b: np.ndarray) -> float:
    a = a / np.linalg.norm(a, axis=1, keepdims=True)
    b = b / np.linalg.norm(b, axis=1, keepdims=True)
    return float((a * b).sum(1).min())


def export_image(run: str, repo: str, int8: bool = False) -> dict:
    import onnxruntime as ort
    from .train import load_run
    cfg, model = load_run(run)
    model = model.merge_adapters().eval().to(memory_format=torch.contiguous_format)
    size = cfg.model.input_size
    with repo_format.staged(repo, repo_format.IMAGE) as tmp:
        path = repo_format.model_path(tmp)
        torch.onnx.export(model, (torch.zeros(1, 3, size, size),), path, input_names=["pixels"],
                          output_names=["embedding"], dynamic_axes={"pixels": {0: "batch"}, "embedding": {0: "batch"}},
                          opset_version=17, dynamo=False)
        x = normalise_pixels(torch.from_numpy(real_images(size))).contiguous()
        with torch.no_grad():
            want = model(x).numpy()
        got = ort.InferenceSession(path, providers=["CPUExecutionProvider"]).run(None, {"pixels": x.numpy()})[0]
        cos = min_cosine(got, want)
        if cos < 0.9999:
            raise SystemExit(f"ONNX Runtime and torch disagree: min cosine {cos:.6f} < 0.9999")
        meta = {"name": f"skulens-{cfg.name}-{cfg.model.arch}-{size}px", "dim": cfg.model.dim, "input_size": size,
                "mean": list(MEAN), "std": list(STD), "min_cosine_onnx_vs_torch": cos, "run": _provenance(run)}
        if int8:
            # Served model = the int8 one; the fp32 graph stays beside it for comparison.
            from .quantize import compare, quantize_image
            fp32 = os.path.join(os.path.dirname(path), "fp32.onnx")
            os.replace(path, fp32)
            quantize_image(fp32, path, size)
            meta["name"] += "-int8"
            meta["quantization"] = {"method": "ONNX Runtime static QDQ, per-channel int8 weights, uint8 activations",
                                    "calibration": "256 training pictures + 256 scanner views",
                                    "measured": compare(fp32, path, size, 1000, 1000)}
        head = os.path.join(run, objectness.FILE)   # scene search's head, fitted to this run's model
        if os.path.exists(head):
            shutil.copy(head, os.path.join(tmp, objectness.FILE))
        repo_format.write(tmp, meta, repo_format.image_config(size, cfg.model.dim))
    repo_format.write_image_pipeline(repo, meta)   # image bytes -> embedding on a stock Triton
    print(f"wrote {os.path.join(repo, repo_format.IMAGE)} (min cosine onnx vs torch {cos:.7f} on {len(x)} real images)")
    return meta


def _provenance(run: str) -> dict:
    out = {"dir": os.path.basename(os.path.normpath(run))}
    for name in ("config.toml", "train.json", "eval.json"):
        p = os.path.join(run, name)
        if os.path.exists(p):
            with open(p) as f:
                out[name] = f.read() if name.endswith(".toml") else json.load(f)
    return out


def onnx_text(model, path: str) -> None:
    """A (input_ids, attention_mask) -> embedding model as ONNX with dynamic batch and length."""
    ids = torch.ones(2, 8, dtype=torch.long)
    torch.onnx.export(model, (ids, torch.ones_like(ids)), path, input_names=["input_ids", "attention_mask"],
                      output_names=["embedding"], opset_version=17, dynamo=False,
                      dynamic_axes={"input_ids": {0: "batch", 1: "tokens"}, "attention_mask": {0: "batch", 1: "tokens"},
                                    "embedding": {0: "batch"}})


def export_text(run: str, repo: str, int8: bool = True) -> dict:
    """int8: serve the dynamically quantised model (measured in the metadata; the fp32 graph
    stays beside it as fp32.onnx). It kept precision@10 and cosine >= 0.98 at half the time."""
    import onnxruntime as ort
    from .models import minilm_dir
    from .text import load_text_run, tokenizer
    meta_in, model = load_text_run(run)
    if meta_in["arch"] != "minilm":
        raise SystemExit("only the MiniLM text branch is exported (the BiLSTM is the comparison)")
    with repo_format.staged(repo, repo_format.TEXT) as tmp:
        path = repo_format.model_path(tmp)
        onnx_text(model, path)
        shutil.copy(os.path.join(minilm_dir(), "tokenizer.json"), repo_format.tokenizer_path(tmp))
        titles = ["Sneaker (Fashion-MNIST article)", "red leather ankle boot", "a bag for a laptop",
                  "women's summer dress"]
        feed = tokenizer(titles)
        with torch.no_grad():
            want = model(torch.from_numpy(feed["input_ids"]), torch.from_numpy(feed["attention_mask"])).numpy()
        got = ort.InferenceSession(path, providers=["CPUExecutionProvider"]).run(None, feed)[0]
        cos = min_cosine(got, want)
        if cos < 0.9999:
            raise SystemExit(f"text: ONNX Runtime and torch disagree: min cosine {cos:.6f}")
        meta = {"name": f"all-MiniLM-L6-v2+projection({meta_in['image_run']})", "dim": int(got.shape[1]),
                "max_tokens": 128, "space": "image", "min_cosine_onnx_vs_torch": cos, "run": meta_in}
        repo_format.write(tmp, meta, repo_format.text_config(int(got.shape[1])))
        image = os.path.join(repo, repo_format.IMAGE)
        if int8 and repo_format.has_model(image):
            from .quantize import compare_text, quantize_text
            fp32 = os.path.join(os.path.dirname(path), "fp32.onnx")
            os.replace(path, fp32)
            quantize_text(fp32, path)
            tmp_fp32 = os.path.join(tmp, "fp32-view")  # a folder whose model is the fp32 graph, to compare
            os.makedirs(os.path.join(tmp_fp32, "1"))
            os.link(fp32, repo_format.model_path(tmp_fp32))
            shutil.copy(repo_format.tokenizer_path(tmp), repo_format.tokenizer_path(tmp_fp32))
            repo_format.write(tmp_fp32, meta, repo_format.text_config(int(got.shape[1])))
            meta["name"] += "-int8"
            meta["quantization"] = {"method": "ONNX Runtime dynamic int8 (MatMul weights int8, activations per call)",
                                    "measured": compare_text(image, tmp_fp32, path)}
            shutil.rmtree(tmp_fp32)
            repo_format.write(tmp, meta, repo_format.text_config(int(got.shape[1])))
    text = os.path.join(repo, repo_format.TEXT)   # text -> embedding on a stock Triton
    repo_format.write_text_pipeline(repo, repo_format.read_meta(text), repo_format.tokenizer_path(text))
    print(f"wrote {os.path.join(repo, repo_format.TEXT)} (min cosine onnx vs torch {cos:.7f})")
    return meta


def export(run: str, repo: str, text_run: str | None = None, int8: bool = False, text_int8: bool = True) -> None:
    export_image(run, repo, int8)
    if text_run:
        export_text(text_run, repo, text_int8)
