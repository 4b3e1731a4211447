"""Adversarial queries: FGSM and PGD on the input pixels, used to train (adversarial.method) and
to measure robustness (evaluate: R@1 of attacked scanner views)."""

from __future__ import annotations

import torch
from torch import nn

from .models import MEAN, STD


def pgd(model: nn.Module, x: torch.Tensor, target: torch.Tensor, eps: float, steps: int) -> torch.Tensor:
    """Push queries x away from their own catalogue vectors `target` within an L-inf ball of `eps`
    (0..255 pixel units). steps=1 is FGSM (a single step of eps); more steps: PGD with a random start."""
    e = (eps / torch.tensor(STD))[None, :, None, None]
    lo = ((0 - torch.tensor(MEAN)) / torch.tensor(STD))[None, :, None, None]
    hi = ((255 - torch.tensor(MEAN)) / torch.tensor(STD))[None, :, None, None]
    step = e if steps == 1 else 2.5 * e / steps
    delta = torch.zeros_like(x) if steps == 1 else (torch.rand_like(x) * 2 - 1) * e
    for _ in range(steps):
        delta.requires_grad_(True)
        sim = (model(x + delta) * target).sum()
        (g,) = torch.autograd.grad(sim, delta)
        delta = torch.maximum(torch.minimum(delta - step * g.sign(), e), -e).detach()
    return torch.maximum(torch.minimum(x + delta, hi), lo).contiguous(memory_format=torch.channels_last)
