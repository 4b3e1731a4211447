"""The capacity probe for clean-picture categories: the image tower trained on clean training
pictures for their category alone (normalised-softmax proxies, flips and shifts, AdamW, warm-up and
cosine decay), then scored as the benchmark scores it: category R@1 and mAP@R, leave-one-out over
the clean test pictures, after every epoch. No instances: what the tower can give the
clean-category target at a resolution and a budget when trained for nothing else. With `views=N`,
N of each batch's pictures are scanner views of its first N articles (labelled by category too),
and the views' category R@1 against the clean test pictures is scored beside it (2,000 held-out
views): what a tower that must also read views keeps.

  python -m skulens_train category size=64 epochs=3        # -> RUNS/probes/category-lite0-64px-3ep.json
  python -m skulens_train category arch=native epochs=8 views=32 dim=128 lr=2e-3 backbone_lr=2e-3 \
      warmup=100 weight_decay=5e-4                         # the dense 32 px CNN from scratch
"""

from __future__ import annotations

import json
import math
import os
import time

import numpy as np
import torch
from torch.nn import functional as F
from tqdm import tqdm

from .data import fashion_mnist
from .evaluate import embed, held_out_views, recall_map, top1_category
from .losses import NormSoftmax
from .config import ARCHS
from .models import ImageEncoder, normalise_pixels
from .views import ViewMaker

DEFAULTS = dict(arch="lite0", size=64, epochs=3.0, lr=1e-3, backbone_lr=3e-4, batch=128, warmup=50,
                seed=0, threads=2, train_limit=0, test_limit=0, dim=256, views=0, weight_decay=1e-4, width=32)
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


def probe(opts: dict, out_path: str, progress: bool = True) -> dict:
    o = check({**DEFAULTS, **opts})
    torch.manual_seed(o["seed"])
    if o["threads"]:
        torch.set_num_threads(int(o["threads"]))
    train = fashion_mnist("train", o["size"], o["train_limit"])
    test = fashion_mnist("test", o["size"], o["test_limit"])
    model = ImageEncoder(o["arch"], o["dim"], width=o["width"]).to(memory_format=torch.channels_last)
    proxies = NormSoftmax(len(train.categories), o["dim"])
    opt = torch.optim.AdamW([{"params": model.backbone.parameters(), "lr": o["backbone_lr"]},
                             {"params": [*model.proj.parameters(), *proxies.parameters()], "lr": o["lr"]}],
                            weight_decay=o["weight_decay"])
    base = [g["lr"] for g in opt.param_groups]
    clean = o["batch"] - o["views"]       # an epoch is one pass over the clean pictures
    per_epoch = max(1, len(train) // clean)
    steps = max(1, int(o["epochs"] * len(train) / clean))
    if o["views"]:
        maker = ViewMaker(train.raw, o["size"], seed=o["seed"])
        q_idx, q_views = held_out_views(test.raw, o["size"], min(EVAL_VIEWS, len(test)))
    rng = np.random.default_rng(o["seed"])
    log, order, pos, t0 = [], np.array([], np.int64), 0, time.perf_counter()

    def score(step):
        g = embed(model, test.clean)
        r = recall_map(g, g, test.labels, test.labels, exclude_self=True, ks=(1,))
        log.append({"step": step, "epoch": round(step / per_epoch, 2), "category R@1": r["R@1"],
                    "category mAP@R": r["mAP@R"], "seconds": round(time.perf_counter() - t0, 1)})
        if o["views"]:
            log[-1]["view category R@1"] = top1_category(embed(model, q_views), g, test.labels, test.labels[q_idx])

    for step in tqdm(range(steps), desc=f"category probe {o['size']}px", disable=not progress):
        if pos + clean > len(order):
            order, pos = rng.permutation(len(train)), 0
        idx = order[pos:pos + clean]
        pos += clean
        f = min(1.0, (step + 1) / o["warmup"]) * 0.5 * (1 + math.cos(math.pi * step / steps))
        for g, lr in zip(opt.param_groups, base):
            g["lr"] = lr * f
        model.train()
        x, labels = shift_flip(train.clean[idx], rng), train.labels[idx]
        if o["views"]:
            x = torch.cat([x, torch.from_numpy(maker(idx[:o["views"]], step))])
            labels = np.concatenate([labels, labels[:o["views"]]])
        loss = proxies(model(normalise_pixels(x)), torch.from_numpy(labels))
        opt.zero_grad()
        loss.backward()
        opt.step()
        if (step + 1) % per_epoch == 0 or step + 1 == steps:
            score(step + 1)
    res = {"config": o, "steps": steps, "train_pictures": len(train), "test_pictures": len(test),
           "train_seconds": round(time.perf_counter() - t0, 1), "log": log,
           **{k: v for k, v in log[-1].items() if k.startswith("category") or k.startswith("view")}}
    os.makedirs(os.path.dirname(out_path) or ".", exist_ok=True)
    with open(out_path, "w") as f:
        json.dump(res, f, indent=1)
    return res


def default_path(runs: str, opts: dict) -> str:
    o = {**DEFAULTS, **opts}
    views = f"-{o['views']}views" if o["views"] else ""
    width = f"-w{o['width']}" if o["width"] != DEFAULTS["width"] and o["arch"] != "lite0" else ""
    return os.path.join(runs, "probes", f"category-{o['arch']}{width}-{o['size']}px-{o['epochs']:g}ep{views}.json")


def check(o: dict) -> dict:
    if o["arch"] not in ARCHS:
        raise ValueError(f"category probe option arch={o['arch']!r}: one of {', '.join(ARCHS)}")
    if not 0 <= o["views"] < o["batch"]:
        raise ValueError(f"category probe option views={o['views']}: 0..batch-1 (batch={o['batch']})")
    return o


def parse(overrides: list[str]) -> dict:
    out = {}
    for item in overrides:
        key, eq, value = item.partition("=")
        if not eq or key not in DEFAULTS:
            raise ValueError(f"category probe option {item!r}: expected key=value, keys {sorted(DEFAULTS)}")
        try:
            out[key] = type(DEFAULTS[key])(value)
        except ValueError:
            kind = {int: "an integer", float: "a number"}.get(type(DEFAULTS[key]), "text")
            raise ValueError(f"category probe option {item!r}: {key} takes {kind}") from None
    check({**DEFAULTS, **out})
    return out
