"""Metric-learning losses. Each takes unit vectors: `q` (queries, e.g. scanner views), `c`
(their catalogue images, row i matches row i) and integer `labels` (instance or category).

  cosine      the design's cosine-similarity loss: pull matching pairs to cos 1, push every
              non-matching pair below a margin (CosineEmbeddingLoss over the whole batch);
  infonce     symmetric InfoNCE / NT-Xent over in-batch negatives (CLIP's loss);
  triplet     triplet loss with semi-hard negatives mined in the batch (FaceNet);
  normsoftmax a proxy loss: softmax over cosine to one learned proxy per class (scaled);
  supcon      supervised contrast within one set (the clean pictures, by category).
Pairs sharing a label are never pushed apart (several views of one product, or one category).
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F


def _same(labels_a: torch.Tensor, labels_b: torch.Tensor) -> torch.Tensor:
    return labels_a[:, None] == labels_b[None, :]


def cosine(q, c, labels, margin: float = 0.2):
    s = q @ c.T
    pos = _same(labels, labels)
    pull = (1 - s[pos]).mean()
    push = F.relu(s[~pos] - margin).mean() if (~pos).any() else s.new_zeros(())
    return pull + push


def infonce(q, c, labels, temperature: float = 0.05, memory=None, memory_labels=None, memory_skip=None):
    """Targets spread evenly over every catalogue row with the same label (one, for instances).

    `memory`: catalogue vectors from earlier batches (cross-batch memory, Wang et al. 2020), extra
    negatives for the queries at no encoding cost; rows sharing a query's label, and empty rows
    (label < 0), are left out, as are those `memory_skip` (bool, queries x memory) marks."""
    logits = q @ c.T / temperature
    pos = _same(labels, labels).float()
    target = pos / pos.sum(1, keepdim=True)
    to_catalogue = logits
    if memory is not None:
        extra = q @ memory.T / temperature
        # A large negative, not -inf: soft-target cross-entropy multiplies it by a zero target.
        drop = _same(labels, memory_labels) | (memory_labels < 0)[None, :]
        extra = extra.masked_fill(drop if memory_skip is None else drop | memory_skip, -1e4)
        to_catalogue = torch.cat([logits, extra], 1)
        target_q = torch.cat([target, target.new_zeros(extra.shape)], 1)
    else:
        target_q = target
    return 0.5 * (F.cross_entropy(to_catalogue, target_q) + F.cross_entropy(logits.T, target.T))


def triplet_semihard(q, c, labels, margin: float = 0.2, reduction: str = "mean"):
    """Anchors: queries; positives: their catalogue rows; negatives: the hardest catalogue row that
    is still farther than the positive (semi-hard), else the hardest one overall."""
    d = 2 - 2 * (q @ c.T)                         # squared distance of unit vectors
    same = _same(labels, labels)
    dp = d.diagonal()[:, None]
    inf = torch.finfo(d.dtype).max
    semi = torch.where(~same & (d > dp), d, torch.full_like(d, inf)).min(1).values
    hardest = torch.where(~same, d, torch.full_like(d, inf)).min(1).values
    dn = torch.where(semi < inf, semi, hardest)
    out = F.relu(dp[:, 0] - dn + margin)
    return out.mean() if reduction == "mean" else out


def supcon(x, labels, temperature: float = 0.1):
    """Supervised contrast (Khosla et al. 2020) among one set of vectors: each row's positives
    are the other rows with its label, its contrast every other row. Rows without a positive
    are left out."""
    s = x @ x.T / temperature
    eye = torch.eye(len(x), dtype=torch.bool, device=x.device)
    s = s.masked_fill(eye, -1e4)
    pos = _same(labels, labels) & ~eye
    has = pos.any(1)
    if not has.any():
        return s.new_zeros(())
    log_p = F.log_softmax(s, 1)
    return -((log_p * pos).sum(1)[has] / pos.sum(1)[has]).mean()


class NormSoftmax(nn.Module):
    """Normalised-softmax proxies (Zhai & Wu 2019): cross-entropy over scale * cos(x, proxy)."""

    def __init__(self, classes: int, dim: int, scale: float = 16.0):
        super().__init__()
        self.proxies = nn.Parameter(torch.randn(classes, dim) * 0.01)
        self.scale = scale

    def forward(self, x, labels):
        return F.cross_entropy(self.scale * x @ F.normalize(self.proxies, dim=1).T, labels)


PAIR_LOSSES = {"cosine": cosine, "infonce": infonce, "triplet": triplet_semihard}
