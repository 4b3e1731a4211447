"""The one training step loop: image fit, text fit and the category probe all run through it.

A recipe gives the loop a `step(b) -> (loss, parts)` function and what it trains; the loop does
the rest the same way for all of them: the optimiser and learning-rate schedule from an
`Optim` config, gradient clipping, a JSONL log, a progress bar, and checkpoint/resume (model,
optimiser, schedule, the recipe's own sampler state, elapsed time) written atomically every
`checkpoint_every` steps, so a run stopped at any moment continues where it stopped. Under
torchrun (WORLD_SIZE > 1) only rank 0 writes.
"""

from __future__ import annotations

import json
import math
import os
import time

import torch
import torch.distributed as dist
from torch import nn
from tqdm import tqdm

from .config import Optim

SCHEDULES = ("warmup_cosine", "ramp_cosine", "onecycle")


def distributed() -> tuple[int, int]:
    """(world size, rank), joining the process group under torchrun."""
    world, rank = int(os.environ.get("WORLD_SIZE", 1)), int(os.environ.get("RANK", 0))
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("gloo")
    return world, rank


def optimizer(o: Optim, groups: list[dict]) -> torch.optim.Optimizer:
    """o.name over parameter groups that carry their own "lr"."""
    if o.name == "sgd":
        return torch.optim.SGD(groups, lr=o.lr, momentum=o.momentum, weight_decay=o.weight_decay, nesterov=True)
    if o.name == "adam":
        return torch.optim.Adam(groups, lr=o.lr, weight_decay=o.weight_decay)
    if o.name == "adamw":
        return torch.optim.AdamW(groups, lr=o.lr, weight_decay=o.weight_decay)
    raise ValueError(f"unknown optimiser {o.name!r}: adamw, adam or sgd")


def schedule(opt: torch.optim.Optimizer, o: Optim, steps: int):
    """The learning-rate schedule over `steps` steps (o.schedule):

    - warmup_cosine: linear warm-up for o.warmup steps, then cosine decay to 0 (image fit);
    - ramp_cosine: the warm-up ramp multiplied into a cosine over all steps (the category probe);
    - onecycle: torch's OneCycleLR, o.warmup steps up to each group's lr (text fit)."""
    if o.schedule == "onecycle":
        return torch.optim.lr_scheduler.OneCycleLR(opt, [g["lr"] for g in opt.param_groups], total_steps=steps,
                                                   pct_start=o.warmup / steps)
    if o.schedule == "ramp_cosine":
        def f(step: int) -> float:
            return min(1.0, (step + 1) / o.warmup) * 0.5 * (1 + math.cos(math.pi * step / steps))
    elif o.schedule == "warmup_cosine":
        def f(step: int) -> float:
            if step < o.warmup:
                return (step + 1) / o.warmup
            return 0.5 * (1 + math.cos(math.pi * min(1.0, (step - o.warmup) / max(1, steps - o.warmup))))
    else:
        raise ValueError(f"optim.schedule = {o.schedule!r}: expected one of {', '.join(SCHEDULES)}")
    return torch.optim.lr_scheduler.LambdaLR(opt, f)


class Loop:
    """Runs steps [start, steps) of one recipe.

    trained: the module whose state is checkpointed (everything that learns, proxies included);
    groups: its optimiser parameter groups; sampler: an object with state_dict()/load_state_dict()
    for what the recipe draws between steps (None when batches depend on the step alone)."""

    def __init__(self, trained: nn.Module, groups: list[dict], o: Optim, steps: int, *, run_dir: str | None = None,
                 checkpoint_every: int = 0, name: str = "train", progress: bool = True, sampler=None,
                 log_every: int = 1):
        self.trained, self.o, self.steps, self.run_dir, self.name = trained, o, steps, run_dir, name
        self.checkpoint_every, self.progress, self.sampler, self.log_every = checkpoint_every, progress, sampler, log_every
        self.world, self.rank = distributed()
        self.opt = optimizer(o, groups)
        self.sched = schedule(self.opt, o, steps)
        self.start, self.spent = 0, 0.0
        self._ckpt = os.path.join(run_dir, "checkpoint.pt") if run_dir else None
        if self._ckpt and os.path.exists(self._ckpt):
            st = torch.load(self._ckpt, map_location="cpu", weights_only=False)
            trained.load_state_dict(st["objective"])
            self.opt.load_state_dict(st["optimizer"])
            self.sched.load_state_dict(st["scheduler"])
            if sampler is not None and "sampler" in st:
                sampler.load_state_dict(st["sampler"])
            self.start, self.spent = st["step"], st.get("seconds", 0.0)

    def lr(self) -> float:
        return self.sched.get_last_lr()[0]

    def seconds(self) -> float:
        return round(self.spent + time.time() - self._t0, 2)

    def run(self, step, after=None) -> None:
        """step(b) -> (loss, {part: value}); after(b + 1) runs once the step is applied (the probe scores
        there). Parameters are clipped to o.grad_clip when it is set."""
        log = self._open_log()
        bar = tqdm(range(self.start, self.steps), initial=self.start, total=self.steps, desc=self.name,
                   disable=not self.progress or self.rank != 0, smoothing=0.1)
        self._t0 = time.time()
        self.trained.train()
        for b in bar:
            loss, parts = step(b)
            self.opt.zero_grad(set_to_none=True)
            loss.backward()
            if self.o.grad_clip:
                nn.utils.clip_grad_norm_(self.trained.parameters(), self.o.grad_clip)
            self.opt.step()
            self.sched.step()
            if log and (b + 1) % self.log_every == 0:
                log.write(json.dumps({"step": b + 1, "loss": sum(parts.values()), **parts, "lr": self.lr(),
                                      "seconds": self.seconds()}) + "\n")
                bar.set_postfix(loss=f"{sum(parts.values()):.3f}")
            if after is not None:
                after(b + 1)
            if self._ckpt and self.rank == 0 and (b + 1 == self.steps or (
                    self.checkpoint_every and (b + 1) % self.checkpoint_every == 0)):
                if log:
                    log.flush()
                self._checkpoint(b + 1)
        if log:
            log.close()
        self.spent = self.seconds() if self.steps > self.start else self.spent

    def _checkpoint(self, step: int) -> None:
        st = {"objective": self.trained.state_dict(), "optimizer": self.opt.state_dict(),
              "scheduler": self.sched.state_dict(), "step": step, "seconds": self.seconds()}
        if self.sampler is not None:
            st["sampler"] = self.sampler.state_dict()
        tmp = self._ckpt + ".tmp"
        torch.save(st, tmp)
        os.replace(tmp, self._ckpt)

    def _open_log(self):
        if not self.run_dir or self.rank != 0:
            return None
        os.makedirs(self.run_dir, exist_ok=True)
        path = os.path.join(self.run_dir, "log.jsonl")
        if os.path.exists(path):
            # Steps logged after the checkpoint we resume from are taken again: drop their lines.
            with open(path) as f:
                kept = [line for line in f if line.strip() and json.loads(line)["step"] <= self.start]
            with open(path, "w") as f:
                f.writelines(kept)
        return open(path, "a")

    def weight_gap(self) -> float:
        """DDP must leave every process with the same weights: the largest difference, measured."""
        if self.world <= 1:
            return 0.0
        flat = torch.cat([p.detach().reshape(-1) for p in self.trained.parameters()])
        ref = flat.clone()
        dist.broadcast(ref, 0)
        gap = (flat - ref).abs().max()
        dist.all_reduce(gap, op=dist.ReduceOp.MAX)
        return float(gap)
