"""Recall@K and mAP@R for (a) category retrieval on clean Fashion-MNIST test images (leave-one-out)
and (b) instance retrieval: seeded scanner views (held-out clutter photos) searched against a
catalogue of clean test images; category R@1 of those views; R@1 under attack; encoder latency.
Baselines go through the same functions: raw pixels and zero-shot ImageNet EfficientNet-Lite0."""

from __future__ import annotations

import time

import numpy as np
import torch
from tqdm import tqdm

from .models import normalise_pixels
from skulens.data import holdout
from skulens.data.views import EVAL_BACKGROUNDS, ViewMaker

KS = (1, 5, 10)


@torch.no_grad()
def embed(model, pixels: np.ndarray, batch: int = 256, desc: str | None = None) -> np.ndarray:
    model.eval()
    out = []
    for a in tqdm(range(0, len(pixels), batch), desc=desc, disable=desc is None, leave=False):
        out.append(model(normalise_pixels(torch.from_numpy(pixels[a:a + batch]))).numpy())
    return np.concatenate(out).astype(np.float32)


def ranked(q: np.ndarray, g: np.ndarray, k: int, exclude_self: bool = False, chunk: int = 2048) -> np.ndarray:
    """Top-k gallery rows per query, best first (ties to the lower row)."""
    k = min(k, len(g))
    out = np.empty((len(q), k), np.int64)
    for a in range(0, len(q), chunk):
        s = q[a:a + chunk] @ g.T
        if exclude_self:
            s[np.arange(len(s)), np.arange(a, a + len(s))] = -np.inf
        top = np.argpartition(-s, k - 1, axis=1)[:, :k]
        order = np.argsort(-np.take_along_axis(s, top, 1), axis=1, kind="stable")
        out[a:a + chunk] = np.take_along_axis(top, order, 1)
    return out


def recall_map(q, g, q_labels, g_labels, exclude_self: bool = False, ks=KS) -> dict:
    """R@K: a relevant item within the top K. mAP@R (Musgrave et al. 2020): R = number of relevant
    gallery items; precision at each relevant rank within the first R, averaged over R."""
    r = np.bincount(g_labels, minlength=int(max(g_labels.max(), q_labels.max())) + 1)[q_labels]
    r = r - (1 if exclude_self else 0)
    top = ranked(q, g, int(max(max(ks), r.max())), exclude_self)
    kmax = top.shape[1]
    rel = g_labels[top] == q_labels[:, None]
    out = {f"R@{k}": float(rel[:, :k].any(1).mean()) for k in ks}
    cum = np.cumsum(rel, 1)
    ranks = np.arange(1, kmax + 1)
    within = ranks[None, :] <= r[:, None]
    out["mAP@R"] = float(((rel & within) * cum / ranks).sum(1).__truediv__(np.maximum(r, 1)).mean())
    return out


def held_out_views(raw, size: int, n: int, seed: int = 1234) -> tuple[np.ndarray, np.ndarray]:
    """n seeded scanner views (clutter from the held-out photos) of a random n of the items `raw`:
    (their sorted item indices, uint8 [n, size, size, 3])."""
    idx = np.sort(np.random.default_rng(seed).choice(len(raw), n, replace=False))
    maker = ViewMaker(raw, size, EVAL_BACKGROUNDS, seed=seed)
    views = np.concatenate([maker(idx[a:a + 512]) for a in
                            tqdm(range(0, n, 512), desc="scanner views", leave=False)])
    return idx, views


def top1_category(q: np.ndarray, g: np.ndarray, g_labels: np.ndarray, q_labels: np.ndarray) -> float:
    """Share of queries whose nearest gallery item has their label."""
    return float((g_labels[ranked(q, g, 1)[:, 0]] == q_labels).mean())


class Benchmark:
    """The fixed evaluation data, built once and reused for every model of a report."""

    def __init__(self, size: int, catalogue: int = 10_000, queries: int = 10_000, seed: int = 1234):
        from .data import fashion_mnist
        self.size = size
        self.test = fashion_mnist("test", size, catalogue)
        self.queries = min(queries, len(self.test))
        self.query_idx, self.views = held_out_views(self.test.raw, size, self.queries, seed)
        # The independent protocol (skulens.data.holdout): the same articles as JPEG frames of 80-128 px
        # through the serving preprocessing; nothing in training draws from it.
        frames = holdout.HoldoutViews(self.test.raw, seed=seed)
        self.holdout = np.concatenate([holdout.decode(frames(self.query_idx[a:a + 512]), size) for a in
                                       tqdm(range(0, self.queries, 512), desc="holdout views", leave=False)])

    def run(self, model, name: str = "model", attack: tuple[int, float, int] | None = None,
            embed_fn=None, query_model=None) -> dict:
        """`query_model` (optional) embeds the views while `model` embeds the catalogue: a new model's
        queries against an old model's catalogue (backward-compatible training)."""
        embed_fn = embed_fn or (lambda px, d=None, m=None: embed(m or model, px, desc=d))
        labels = self.test.labels
        g = embed_fn(self.test.clean, f"{name}: catalogue")
        t0 = time.perf_counter()
        q = embed_fn(self.views, f"{name}: views", query_model) if query_model is not None else \
            embed_fn(self.views, f"{name}: views")
        per_image_ms = (time.perf_counter() - t0) / len(self.views) * 1e3
        res = {"name": name, "dim": int(g.shape[1]), "catalogue": len(g), "queries": len(q)}
        cat = recall_map(g, g, labels, labels, exclude_self=True)
        res.update({f"category {k}": v for k, v in cat.items()})
        g1k = g[:1000]
        res["category R@1 (1k gallery)"] = recall_map(g1k, g1k, labels[:1000], labels[:1000], True, (1,))["R@1"]
        inst = recall_map(q, g, self.query_idx, np.arange(len(g)))
        res.update({f"instance {k}": v for k, v in inst.items() if k != "mAP@R"})
        res["view category R@1"] = top1_category(q, g, labels, labels[self.query_idx])
        h = embed_fn(self.holdout, f"{name}: holdout", query_model) if query_model is not None else \
            embed_fn(self.holdout, f"{name}: holdout")
        hold = recall_map(h, g, self.query_idx, np.arange(len(g)))
        res.update({f"holdout instance {k}": v for k, v in hold.items() if k != "mAP@R"})
        res["holdout view category R@1"] = top1_category(h, g, labels, labels[self.query_idx])
        res["batch encode ms/image"] = per_image_ms
        if attack is not None and model is not None:
            res.update(self.attacked(model, g, *attack))
        return res

    def attacked(self, model, g: np.ndarray, n: int, eps: float, steps: int) -> dict:
        """Instance R@1 of n views after an attack that pushes each away from its catalogue vector."""
        from .adversarial import pgd
        model.eval()
        idx = np.arange(min(n, self.queries))
        x = normalise_pixels(torch.from_numpy(self.views[idx]))
        target = torch.from_numpy(g[self.query_idx[idx]])
        out = {}
        for label, k in (("FGSM", 1), ("PGD", steps)):
            adv = torch.cat([pgd(model, x[a:a + 64], target[a:a + 64], eps, k) for a in range(0, len(x), 64)])
            with torch.no_grad():
                qa = torch.cat([model(adv[a:a + 256]) for a in range(0, len(adv), 256)]).numpy()
            out[f"instance R@1 {label} eps={eps:g}"] = float((ranked(qa, g, 1)[:, 0] == self.query_idx[idx]).mean())
        with torch.no_grad():
            qc = model(x).numpy()
        out["instance R@1 clean (attack subset)"] = float((ranked(qc, g, 1)[:, 0] == self.query_idx[idx]).mean())
        return out


def latency_ms(model, size: int, batch: int = 1, repeats: int = 30) -> float:
    x = torch.randn(batch, 3, size, size).contiguous(memory_format=torch.channels_last)
    model.eval()
    with torch.no_grad():
        for _ in range(3):
            model(x)
        t0 = time.perf_counter()
        for _ in range(repeats):
            model(x)
    return (time.perf_counter() - t0) / repeats * 1e3


def raw_pixels(px: np.ndarray) -> np.ndarray:
    """Baseline: the grey pixels as a vector, centred and unit length."""
    x = px[..., 0].reshape(len(px), -1).astype(np.float32)
    x -= x.mean(1, keepdims=True)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


class ZeroShotLite0(torch.nn.Module):
    """Baseline: ImageNet EfficientNet-Lite0's pooled 1280-d features, no training."""

    def __init__(self):
        super().__init__()
        from .models import Lite0
        self.net = Lite0(pretrained=True).eval()

    def forward(self, x):
        return torch.nn.functional.normalize(self.net(x), dim=1)
