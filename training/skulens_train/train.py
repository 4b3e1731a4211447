"""`fit`: one config in, one run directory out (config.toml, log.jsonl, checkpoint.pt, model.pt).

Seeded and resumable: batch b of a run is drawn from rng(seed, b) and its scanner views from
rng(seed, b, item), so a resumed run sees exactly the batches it would have seen. Under torchrun
(WORLD_SIZE > 1) each process takes its share of the same global batch; embeddings are gathered
so in-batch negatives span the whole batch, and DDP averages the gradients.
"""

from __future__ import annotations

import json
import os

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from torch.nn import functional as F

from skulens.data.views import ViewMaker, ViewSpec

from . import config as C
from .data import Items, fashion_mnist, folder
from .losses import PAIR_LOSSES, NormSoftmax, infonce, supcon
from .adversarial import pgd
from .loop import Loop, distributed
from .models import ImageEncoder, normalise_pixels, trainable_parameters


def build_model(cfg: C.Config) -> ImageEncoder:
    m = cfg.model
    return ImageEncoder(m.arch, m.dim, m.trainable, m.pretrained, m.width, m.norm).to(
        memory_format=torch.channels_last)


def load_run(run_dir: str, weights: str = "model.pt") -> tuple[C.Config, ImageEncoder]:
    """A finished run's config and model (eval mode)."""
    cfg = C.load(os.path.join(run_dir, "config.toml"))
    model = build_model(cfg)
    state = torch.load(os.path.join(run_dir, weights), map_location="cpu", weights_only=True)
    model.load_state_dict(state["model"] if "model" in state and "step" in state else state)
    return cfg, model.eval()


class Objective(nn.Module):
    """Everything trained, in one module so DDP syncs all of it: encoder + category proxies."""

    def __init__(self, cfg: C.Config, encoder: ImageEncoder, classes: int):
        super().__init__()
        self.cfg, self.encoder = cfg, encoder
        self.proxies = NormSoftmax(classes, cfg.model.dim, cfg.loss.category_scale) \
            if cfg.loss.category_weight > 0 else None
        # Cross-batch memory: a ring of recent catalogue vectors and their instance ids. Buffers, so
        # checkpoints carry it (bit-exact resume) and DDP keeps it equal on every process.
        if m := cfg.loss.memory:
            self.register_buffer("memory", torch.zeros(m, cfg.model.dim))
            self.register_buffer("memory_ids", torch.full((m,), -1, dtype=torch.long))
            self.register_buffer("memory_next", torch.zeros((), dtype=torch.long))
            if cfg.loss.memory_other_categories:
                self.register_buffer("memory_cats", torch.full((m,), -1, dtype=torch.long))

    def forward(self, q, c, inst, cat, old_c=None, teacher=None):
        L = self.cfg.loss
        emb = self.encoder(torch.cat([q, c]))
        eq, ec = emb[: len(q)], emb[len(q):]
        parts = {}
        if self.proxies is not None:
            # Per-sample, so on this process's share: DDP's average over processes is the batch mean.
            parts["category"] = L.category_weight * self.proxies(torch.cat([eq, ec]), torch.cat([cat, cat]))
        if L.clean_supcon > 0:   # clean pictures of one category together (category R@1 on clean)
            parts["clean_supcon"] = L.clean_supcon * supcon(ec, cat, L.supcon_temperature)
        world = dist.get_world_size() if dist.is_initialized() else 1
        if world > 1:
            eq, ec, inst, cat = (_gather(t) for t in (eq, ec, inst, cat))
            old_c = _gather(old_c) if old_c is not None else None
            teacher = tuple(_gather(t) for t in teacher) if teacher is not None else None
        batch = {}
        if L.pair != "none":
            kw = {"temperature": L.temperature} if L.pair == "infonce" else {"margin": L.margin}
            if L.memory:   # a copy: the ring is overwritten below, before backward reads it
                kw.update(memory=self.memory.clone(), memory_labels=self.memory_ids.clone())
                if L.memory_other_categories:   # the memory spreads categories apart, not products within one
                    kw["memory_skip"] = cat[:, None] == self.memory_cats.clone()[None, :]
            batch["pair"] = PAIR_LOSSES[L.pair](eq, ec, inst, **kw)
            if L.memory and self.training:
                keep, ids, cats = ec.detach(), inst, cat
                if world > 1:   # back to the batch's order, so the ring matches one process slot by slot
                    order = torch.argsort(torch.cat([torch.arange(r, len(ids), world) for r in range(world)]))
                    keep, ids, cats = keep[order], ids[order], cats[order]
                self._remember(keep, ids, cats)
        if old_c is not None:   # new queries must find the old catalogue vectors
            batch["compat"] = self.cfg.compat.weight * infonce(eq, old_c, inst, L.temperature)
        if teacher is not None:  # match the teacher's vectors and its query-catalogue similarities
            tq, tc = teacher
            rel = F.kl_div(F.log_softmax(eq @ ec.T / 0.1, 1), F.softmax(tq @ tc.T / 0.1, 1), reduction="batchmean")
            batch["distill"] = self.cfg.distill.weight * ((2 - (eq * tq).sum(1) - (ec * tc).sum(1)).mean() + rel)
        # Every process computes the in-batch losses on the whole (gathered) batch but holds the graph
        # of its own share only; scaling them by the world size makes DDP's average the full gradient.
        total = sum(parts.values()) + world * sum(batch.values())
        parts.update(batch)
        return total, {k: float(v.detach()) for k, v in parts.items()}

    @torch.no_grad()
    def _remember(self, vectors: torch.Tensor, ids: torch.Tensor, cats: torch.Tensor) -> None:
        m = len(self.memory)
        n = min(len(vectors), m)
        slots = (int(self.memory_next) + torch.arange(n)) % m
        self.memory[slots] = vectors[-n:]
        self.memory_ids[slots] = ids[-n:]
        if hasattr(self, "memory_cats"):
            self.memory_cats[slots] = cats[-n:]
        self.memory_next.fill_((int(self.memory_next) + n) % m)


def _gather(t: torch.Tensor) -> torch.Tensor:
    parts = [torch.empty_like(t) for _ in range(dist.get_world_size())]
    dist.all_gather(parts, t.detach().contiguous())
    parts[dist.get_rank()] = t
    return torch.cat(parts)


def _init_proxies(obj: Objective, run: str, items: Items) -> None:
    """The earlier run's trained proxies when its checkpoint has them for the same classes (a
    continued run then starts where that one ended), else the class means of its vectors."""
    ckpt = os.path.join(run, "checkpoint.pt")
    if os.path.exists(ckpt):
        trained = torch.load(ckpt, map_location="cpu", weights_only=False)["objective"].get("proxies.proxies")
        if trained is not None and trained.shape == obj.proxies.proxies.shape:
            with torch.no_grad():
                obj.proxies.proxies.copy_(trained)
            return
    _proxies_from_means(obj, items)


@torch.no_grad()
def _proxies_from_means(obj: Objective, items: Items, per_class: int = 200) -> None:
    """Category proxies start at the class means of a trained encoder's vectors, so the first
    steps of a continued run do not chase random proxies (and drag the encoder with them)."""
    rng = np.random.default_rng(0)
    obj.encoder.eval()
    for c in range(len(obj.proxies.proxies)):
        idx = np.flatnonzero(items.labels == c)
        if len(idx):
            idx = rng.choice(idx, min(per_class, len(idx)), replace=False)
            v = obj.encoder(normalise_pixels(torch.from_numpy(items.clean[idx]))).mean(0)
            obj.proxies.proxies[c] = F.normalize(v, dim=0)
    obj.encoder.train()


def param_groups(o: C.Optim, obj: Objective) -> list[dict]:
    """The head (projection + proxies) at o.lr; the body at o.backbone_lr, or at o.lr when its
    weights are fresh (LoRA adapters, a net from scratch): pretrained weights move slowly."""
    enc = obj.encoder
    head = list(enc.proj.parameters()) + (list(obj.proxies.parameters()) if obj.proxies is not None else [])
    ids = {id(p) for p in head}
    body = [p for p in obj.parameters() if p.requires_grad and id(p) not in ids]
    fresh = enc.trainable.startswith("lora") or not obj.cfg.model.pretrained
    groups = [{"params": head, "lr": o.lr}]
    if body:
        groups.append({"params": body, "lr": o.lr if fresh else o.backbone_lr})
    return groups


class Batches:
    """Batch b: rng(seed, b) picks the items; classes_per_batch > 0 draws them from few categories."""

    def __init__(self, items: Items, cfg: C.Config):
        self.labels, self.cfg = items.labels, cfg
        self.by_class = {c: np.flatnonzero(items.labels == c) for c in np.unique(items.labels)}

    def __call__(self, b: int) -> np.ndarray:
        rng = np.random.default_rng((self.cfg.seed, 1, b))
        n, k = min(self.cfg.optim.batch, len(self.labels)), self.cfg.data.classes_per_batch
        if k <= 0:
            return rng.choice(len(self.labels), n, replace=False)
        cls = rng.choice(list(self.by_class), min(k, len(self.by_class)), replace=False)
        per = -(-n // len(cls))
        return np.concatenate([rng.choice(self.by_class[c], per, replace=False) for c in cls])[:n]


def fit(cfg: C.Config, run_dir: str, items: Items | None = None, progress: bool = True) -> ImageEncoder:
    world, rank = distributed()
    if cfg.loss.pair == "none" and cfg.loss.category_weight <= 0 and not cfg.compat.old_run \
            and not cfg.distill.teacher_run:
        raise ValueError("nothing to train: set loss.pair or loss.category_weight")
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    os.makedirs(run_dir, exist_ok=True)
    if rank == 0:
        with open(os.path.join(run_dir, "config.toml"), "w") as f:
            f.write(C.dump_toml(cfg))
    if items is None and cfg.data.folder:
        items = folder(cfg.data.folder, cfg.data.meta, cfg.model.input_size)
    items = items or fashion_mnist("train", cfg.model.input_size, cfg.data.train_limit, cfg.data.classes)
    specs = {"standard": ViewSpec, "wide": ViewSpec.wide, "shelf": ViewSpec.shelf}
    if cfg.data.views not in specs:
        raise ValueError(f"data.views must be one of {', '.join(specs)}, not {cfg.data.views!r}")
    views = ViewMaker(items.raw, cfg.model.input_size, seed=cfg.seed, spec=specs[cfg.data.views]())
    encoder = build_model(cfg)
    obj = Objective(cfg, encoder, len(items.categories))
    old = load_run(cfg.compat.old_run)[1] if cfg.compat.old_run else None
    teacher_cfg, teacher = load_run(cfg.distill.teacher_run) if cfg.distill.teacher_run else (None, None)
    if cfg.init_run:
        # Continue from an earlier model (incremental learning), not from scratch.
        encoder.load_state_dict(load_run(cfg.init_run)[1].state_dict())
        if obj.proxies is not None:
            _init_proxies(obj, cfg.init_run, items)
    loop = Loop(obj, param_groups(cfg.optim, obj), cfg.optim, cfg.optim.steps, run_dir=run_dir,
                checkpoint_every=cfg.checkpoint_every, name=cfg.name, progress=progress)
    model = nn.parallel.DistributedDataParallel(obj) if world > 1 else obj
    batches = Batches(items, cfg)

    def step(b: int):
        idx = batches(b)[rank::world]
        cq = items.clean[idx]
        q = normalise_pixels(torch.from_numpy(views(idx, epoch=b) if cfg.data.augment else cq))
        c = normalise_pixels(torch.from_numpy(cq))
        inst, cat = torch.from_numpy(idx.astype(np.int64)), torch.from_numpy(items.labels[idx])
        adv = cfg.adversarial
        if adv.method != "none":
            n = int(round(adv.fraction * len(q)))
            encoder.eval()
            with torch.no_grad():
                target = encoder(c[:n])
            q = torch.cat([pgd(encoder, q[:n], target, adv.eps, 1 if adv.method == "fgsm" else adv.steps), q[n:]])
            encoder.train()
        old_c = teacher_out = None
        with torch.no_grad():
            if old is not None:
                old_c = old(c)
            if teacher is not None:
                size = teacher_cfg.model.input_size
                rs = (lambda x: x) if size == cfg.model.input_size else (
                    lambda x: F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False))
                teacher_out = (teacher(rs(q)), teacher(rs(c)))
        return model(q, c, inst, cat, old_c, teacher_out)

    loop.run(step)
    divergence = loop.weight_gap()
    if rank == 0:
        torch.save(encoder.state_dict(), os.path.join(run_dir, "model.pt"))
        with open(os.path.join(run_dir, "train.json"), "w") as f:
            json.dump({"steps": cfg.optim.steps, "train_seconds": round(loop.spent, 1),
                       "threads": torch.get_num_threads(), "processes": world,
                       "max_weight_gap_between_processes": divergence,
                       "trainable_parameters": trainable_parameters(encoder),
                       "images_per_step": 2 * cfg.optim.batch}, f, indent=1)
    return encoder.eval()
