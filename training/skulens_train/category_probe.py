"""The capacity probe for clean-picture categories: the image tower trained on clean training
pictures for their category alone (normalised-softmax proxies, flips and shifts, AdamW, warm-up and
cosine decay), then scored as the benchmark scores it: category R@1 and mAP@R, leave-one-out over
the clean test pictures, after every epoch. No instances: what the tower can give the
clean-category target at a resolution and a budget when trained for nothing else. With `views=N`,
N of each batch's pictures are scanner views of its first N articles (labelled by category too),
and the views' category R@1 against the clean test pictures is scored beside it (2,000 held-out
views): what a tower that must also read views keeps.

Settings are `config.Probe` (the same key=value grammar as `fit`); the loop is `loop.Loop`,
which checkpoints every epoch, so a probe stopped midway resumes (RUNS/probes/<name>/).

  python -m skulens_train category model.input_size=64 epochs=3   # -> RUNS/probes/category-lite0-64px-3ep.json
  python -m skulens_train category model.arch=native epochs=8 views=32 model.dim=128 optim.lr=2e-3 \
      optim.backbone_lr=2e-3 optim.warmup=100 optim.weight_decay=5e-4   # the dense 32 px CNN from scratch
"""

from __future__ import annotations

import json
import os

import numpy as np
import torch
from torch.nn import functional as F

from skulens.data.views import ViewMaker

from . import config as C
from .data import fashion_mnist
from .evaluate import embed, held_out_views, recall_map, top1_category
from .loop import Loop
from .losses import NormSoftmax
from .models import ImageEncoder, normalise_pixels

EVAL_VIEWS = 2000


def shift_flip(x: np.ndarray, rng: np.random.Generator) -> torch.Tensor:
    """uint8 [B, S, S, 3]: a random horizontal flip and a shift of up to S/8 (zero fill)."""
    t = torch.from_numpy(x).permute(0, 3, 1, 2)
    flip = torch.from_numpy(rng.random(len(t)) < 0.5)
    t = torch.where(flip[:, None, None, None], t.flip(3), t)
    s, p = t.shape[-1], t.shape[-1] // 8
    padded = F.pad(t, (p, p, p, p))
    o = rng.integers(0, 2 * p + 1, (len(t), 2))
    return torch.stack([padded[i, :, a:a + s, b:b + s] for i, (a, b) in enumerate(o)]).permute(0, 2, 3, 1)


class _Epochs:
    """The probe's sampler: shuffled passes over the clean pictures (its rng also draws the
    augmentation), and the scores so far; checkpointed with the weights, so a resumed probe
    continues its epoch and its log."""

    def __init__(self, n: int, per_step: int, seed: int):
        self.n, self.per_step = n, per_step
        self.rng = np.random.default_rng(seed)
        self.order, self.pos, self.log = np.array([], np.int64), 0, []

    def next(self) -> np.ndarray:
        if self.pos + self.per_step > len(self.order):
            self.order, self.pos = self.rng.permutation(self.n), 0
        idx = self.order[self.pos:self.pos + self.per_step]
        self.pos += self.per_step
        return idx

    def state_dict(self) -> dict:
        return {"rng": self.rng.bit_generator.state, "order": self.order, "pos": self.pos, "log": self.log}

    def load_state_dict(self, st: dict) -> None:
        self.rng.bit_generator.state = st["rng"]
        self.order, self.pos, self.log = st["order"], st["pos"], st["log"]


def probe(cfg: C.Probe, out_path: str, progress: bool = True) -> dict:
    torch.manual_seed(cfg.seed)
    if cfg.threads:
        torch.set_num_threads(int(cfg.threads))
    m, o = cfg.model, cfg.optim
    train = fashion_mnist("train", m.input_size, cfg.train_limit)
    test = fashion_mnist("test", m.input_size, cfg.test_limit)
    model = ImageEncoder(m.arch, m.dim, width=m.width).to(memory_format=torch.channels_last)
    proxies = NormSoftmax(len(train.categories), m.dim)
    trained = torch.nn.ModuleDict({"model": model, "proxies": proxies})
    groups = [{"params": model.backbone.parameters(), "lr": o.backbone_lr},
              {"params": [*model.proj.parameters(), *proxies.parameters()], "lr": o.lr}]
    clean = o.batch - cfg.views       # an epoch is one pass over the clean pictures
    per_epoch = max(1, len(train) // clean)
    steps = max(1, int(cfg.epochs * len(train) / clean))
    if cfg.views:
        maker = ViewMaker(train.raw, m.input_size, seed=cfg.seed)
        q_idx, q_views = held_out_views(test.raw, m.input_size, min(EVAL_VIEWS, len(test)))
    sampler = _Epochs(len(train), clean, cfg.seed)
    run_dir = os.path.splitext(out_path)[0]
    loop = Loop(trained, groups, o, steps, run_dir=run_dir, checkpoint_every=per_epoch,
                name=f"category probe {m.input_size}px", progress=progress, sampler=sampler, log_every=per_epoch)
    def step(b: int):
        idx = sampler.next()
        model.train()
        # One generator draws the order and the augmentation, in this order (the recorded probes' draws).
        x, labels = shift_flip(train.clean[idx], sampler.rng), train.labels[idx]
        if cfg.views:
            x = torch.cat([x, torch.from_numpy(maker(idx[:cfg.views], b))])
            labels = np.concatenate([labels, labels[:cfg.views]])
        loss = proxies(model(normalise_pixels(x)), torch.from_numpy(labels))
        return loss, {"category": float(loss.detach())}

    def score(done: int):
        if done % per_epoch and done != steps:
            return
        g = embed(model, test.clean)
        r = recall_map(g, g, test.labels, test.labels, exclude_self=True, ks=(1,))
        sampler.log.append({"step": done, "epoch": round(done / per_epoch, 2), "category R@1": r["R@1"],
                            "category mAP@R": r["mAP@R"], "seconds": loop.seconds()})
        if cfg.views:
            sampler.log[-1]["view category R@1"] = top1_category(embed(model, q_views), g, test.labels,
                                                                 test.labels[q_idx])

    loop.run(step, after=score)
    log = sampler.log
    res = {"config": C.as_dict(cfg), "steps": steps, "train_pictures": len(train), "test_pictures": len(test),
           "train_seconds": round(loop.spent, 1), "log": log,
           **{k: v for k, v in log[-1].items() if k.startswith("category") or k.startswith("view")}}
    os.makedirs(os.path.dirname(out_path) or ".", exist_ok=True)
    with open(out_path, "w") as f:
        json.dump(res, f, indent=1)
    return res


def default_path(runs: str, cfg: C.Probe) -> str:
    m = cfg.model
    views = f"-{cfg.views}views" if cfg.views else ""
    width = f"-w{m.width}" if m.width != C.Model().width and m.arch != "lite0" else ""
    return os.path.join(runs, "probes", f"category-{m.arch}{width}-{m.input_size}px-{cfg.epochs:g}ep{views}.json")
