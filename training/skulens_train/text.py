"""The text branch: product titles into the image space (CLIP-style, with the image tower locked).

Fashion-MNIST has no titles, so titles are derived from the class alone (honest: they say nothing
the label does not): class synonyms in templates. Training sees two synonyms per class in six
templates; evaluation uses two other synonyms in other templates, so it measures whether a branch
understands words it was not trained on. Two branches are compared on the same budget:
  minilm  all-MiniLM-L6-v2 (frozen) + a trained projection;
  bilstm  word pieces -> embeddings -> BiLSTM -> projection, trained from scratch (the seed's idea).
Both are trained against the frozen image embeddings of training articles with a multi-positive
InfoNCE (every image of the title's category is a positive), so text, image and image+text queries
search one catalogue.
"""

from __future__ import annotations

import json
import os
import time

import numpy as np
import torch
from torch.nn import functional as F

from . import config as C
from .loop import Loop
from .losses import infonce

# Class -> (training words, held-out words). Training words hold every class's name as the catalogue
# spells it (datasets.CLASSES, added in titles()) and singular and plural forms: MiniLM's word pieces
# split "trouser" into "tr ##ouse ##r", a sentence vector unrelated to "trousers"; a projection trained
# on the plural alone mapped the catalogue's own word "Trouser" onto sneakers (issue 22).
SYNONYMS = {
    0: (["t-shirt", "top", "t-shirts", "tops", "tshirt"], ["tee", "short-sleeved top"]),
    1: (["trousers", "pants", "trouser", "pant"], ["jeans", "slacks"]),
    2: (["pullover", "sweater", "pullovers", "sweaters"], ["jumper", "knitted jumper"]),
    3: (["dress", "summer dress", "dresses"], ["gown", "frock"]),
    4: (["coat", "jacket", "coats", "jackets"], ["overcoat", "parka"]),
    5: (["sandal", "flip-flop", "sandals", "flip-flops"], ["strappy sandals", "slides"]),
    6: (["shirt", "button-down shirt", "shirts"], ["blouse", "flannel shirt"]),
    7: (["sneaker", "trainer", "sneakers", "trainers"], ["running shoe", "canvas shoe"]),
    8: (["bag", "handbag", "bags", "handbags"], ["tote", "purse"]),
    9: (["ankle boot", "boot", "ankle boots", "boots"], ["chelsea boot", "bootie"]),
}
TRAIN_TEMPLATES = ("{}", "a {}", "the {}", "women's {}", "men's {}", "classic {}", "{} for sale",
                   "a picture of a {}", "{} (Fashion-MNIST article)")
TEST_TEMPLATES = ("photo of a {}", "new {} in stock", "{}, size M", "cheap {} on sale")


def titles(split: str) -> tuple[list[str], np.ndarray]:
    words = 0 if split == "train" else 1
    tpl = TRAIN_TEMPLATES if split == "train" else TEST_TEMPLATES
    from skulens.data.datasets import CLASSES
    out, labels = [], []
    for c, syn in SYNONYMS.items():
        for w in ([CLASSES[c]] if split == "train" else []) + syn[words]:
            for t in tpl:
                out.append(t.format(w))
                labels.append(c)
    return out, np.asarray(labels, np.int64)


_TOK = None


def tokenizer(texts) -> dict:
    global _TOK
    if _TOK is None:
        from tokenizers import Tokenizer
        from .models import minilm_dir
        _TOK = Tokenizer.from_file(os.path.join(minilm_dir(), "tokenizer.json"))
        _TOK.enable_padding()
        _TOK.enable_truncation(128)
    enc = _TOK.encode_batch(list(texts))
    return {"input_ids": np.asarray([e.ids for e in enc], np.int64),
            "attention_mask": np.asarray([e.attention_mask for e in enc], np.int64)}


def build(arch: str, dim: int):
    from .models import BiLSTMText, MiniLMText
    if arch == "minilm":
        return MiniLMText(dim)
    if arch == "bilstm":
        return BiLSTMText(30522, dim)
    raise ValueError(f"unknown text arch {arch!r}: minilm or bilstm")


def _encode(model, texts, arch: str, cache: dict | None = None) -> torch.Tensor:
    if arch == "minilm" and cache is not None:
        # The frozen MiniLM gives a title the same sentence vector every time: compute it once.
        todo = [t for t in dict.fromkeys(texts) if t not in cache]
        if todo:
            feed = {k: torch.from_numpy(v) for k, v in tokenizer(todo).items()}
            with torch.no_grad():
                cache.update(zip(todo, model.sentence(feed["input_ids"], feed["attention_mask"])))
        return F.normalize(model.proj(torch.stack([cache[t] for t in texts])), dim=1)
    feed = {k: torch.from_numpy(v) for k, v in tokenizer(texts).items()}
    return model(feed["input_ids"], feed["attention_mask"])


class _Draws:
    """The text fit's sampler: its rng, checkpointed so a resumed fit draws what it would have."""

    def __init__(self, seed: int):
        self.rng = np.random.default_rng(seed)

    def state_dict(self) -> dict:
        return self.rng.bit_generator.state

    def load_state_dict(self, st: dict) -> None:
        self.rng.bit_generator.state = st


def fit_text(cfg: C.Text, out: str, progress: bool = True) -> dict:
    """Train the text branch of cfg into folder out (model.pt, meta.json; resumable)."""
    from .data import fashion_mnist
    from .evaluate import embed
    from .train import load_run
    torch.manual_seed(cfg.seed)
    image_cfg, image_model = load_run(cfg.image_run)
    items = fashion_mnist("train", image_cfg.model.input_size, cfg.images)
    img = torch.from_numpy(embed(image_model, items.clean, desc="image embeddings"))
    labels = torch.from_numpy(items.labels)
    texts, tlabels = titles("train")
    by_class = {c: [t for t, l in zip(texts, tlabels) if l == c] for c in SYNONYMS}
    model = build(cfg.arch, image_cfg.model.dim)
    o = cfg.optim
    draws = _Draws(cfg.seed)
    loop = Loop(model, [{"params": [p for p in model.parameters() if p.requires_grad], "lr": o.lr}], o, o.steps,
                run_dir=out, checkpoint_every=max(1, o.steps // 4), name=f"text {cfg.arch}", progress=progress,
                sampler=draws)
    cache: dict = {}

    def step(b: int):
        rng = draws.rng
        idx = rng.choice(len(img), o.batch, replace=False)
        lab = labels[idx]
        batch_titles = [by_class[int(c)][rng.integers(len(by_class[int(c)]))] for c in lab]
        t_emb = _encode(model, batch_titles, cfg.arch, cache)
        loss = infonce(t_emb, img[idx], lab, 0.05)
        return loss, {"infonce": float(loss.detach())}

    loop.run(step)
    state = model.proj.state_dict() if cfg.arch == "minilm" else model.state_dict()
    torch.save(state, os.path.join(out, "model.pt"))
    meta = {"arch": cfg.arch, "image_run": os.path.basename(os.path.normpath(cfg.image_run)),
            "image_run_dir": cfg.image_run, "dim": image_cfg.model.dim, "steps": o.steps, "batch": o.batch,
            "train_seconds": round(loop.spent, 1),
            "trainable_parameters": sum(p.numel() for p in model.parameters() if p.requires_grad)}
    with open(os.path.join(out, "meta.json"), "w") as f:
        json.dump(meta, f, indent=1)
    with open(os.path.join(out, "config.toml"), "w") as f:
        f.write(C.dump_toml(cfg))
    return meta


def load_text_run(run: str):
    with open(os.path.join(run, "meta.json")) as f:
        meta = json.load(f)
    model = build(meta["arch"], meta["dim"])
    state = torch.load(os.path.join(run, "model.pt"), map_location="cpu", weights_only=True)
    (model.proj if meta["arch"] == "minilm" else model).load_state_dict(state)
    return meta, model.eval()


@torch.no_grad()
def evaluate_text(run: str, bench) -> dict:
    """Text -> image category retrieval over the test catalogue, on held-out and training phrasing;
    and image+text queries (a scanner view plus a held-out title of its category)."""
    from .evaluate import embed, ranked, recall_map
    from .train import load_run
    meta, model = load_text_run(run)
    _, image_model = load_run(meta["image_run_dir"])
    g = embed(image_model, bench.test.clean)
    glab = bench.test.labels
    res = {"name": f"text {meta['arch']}", "trainable_parameters": meta["trainable_parameters"],
           "train_seconds": meta["train_seconds"]}
    for split in ("test", "train"):
        texts, tl = titles(split)
        t = _encode(model, texts, meta["arch"]).numpy()
        r = recall_map(t, g, tl, glab, ks=(1, 10))
        what = "held-out words" if split == "test" else "training words"
        res.update({f"text->image {k} ({what})": v for k, v in r.items()})
    t0 = time.perf_counter()
    _encode(model, ["women's summer dress"], meta["arch"])
    res["encode ms/title"] = (time.perf_counter() - t0) * 1e3
    # Image + text: each view with one held-out title of its own category.
    texts, tl = titles("test")
    q_img = embed(image_model, bench.views)
    qlab = glab[bench.query_idx]
    pick = np.array([np.flatnonzero(tl == c)[i % int((tl == c).sum())] for i, c in enumerate(qlab)])
    t = _encode(model, texts, meta["arch"]).numpy()[pick]
    for name, q in (("image", q_img), ("image+text", q_img + t)):
        q = q / np.linalg.norm(q, axis=1, keepdims=True)
        top1 = ranked(q, g, 1)[:, 0]
        res[f"{name}: view instance R@1"] = float((top1 == bench.query_idx).mean())
        res[f"{name}: view category R@1"] = float((glab[top1] == qlab).mean())
    return res
