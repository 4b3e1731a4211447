"""Run configuration: a TOML file, every field with a default, overridable with `key=value`."""

from __future__ import annotations

import dataclasses
import os
import tomllib
from dataclasses import dataclass, field


@dataclass
class Model:
    arch: str = "lite0"          # lite0 | small | native (dense residual CNN at 32 px, from scratch)
    dim: int = 256
    trainable: str = "all"       # all | last:N | head | lora:R
    pretrained: bool = True
    width: int = 32              # small and native CNNs only
    norm: str = "batch"          # small CNN only: batch | group
    input_size: int = 64


@dataclass
class Data:
    folder: str = ""             # a catalogue of your own (images + `meta`), as `skulens ingest` reads;
    meta: str = ""               # empty: Fashion-MNIST's training split
    train_limit: int = 0         # 0: all 60,000 training articles
    classes: list[int] = field(default_factory=list)   # empty: all ten (incremental runs restrict them)
    augment: bool = True         # queries are scanner views; False: the clean image itself
    classes_per_batch: int = 0   # >0: batches drawn from this many categories (harder negatives)


@dataclass
class Loss:
    pair: str = "infonce"        # infonce | cosine | triplet | none
    temperature: float = 0.05
    margin: float = 0.2
    category_weight: float = 0.0  # normalised-softmax proxies on the ten categories
    category_scale: float = 16.0
    memory: int = 0              # infonce: catalogue vectors of earlier batches kept as extra negatives
    clean_supcon: float = 0.0    # weight of supervised contrast among the batch's clean pictures (category)
    supcon_temperature: float = 0.1
    # Cross-batch memory negatives only from other categories: the memory's ~8k vectors then push
    # categories apart, while products within one category are told apart by the in-batch negatives.
    memory_other_categories: bool = False


@dataclass
class Optim:
    name: str = "adamw"          # adamw | adam | sgd
    lr: float = 1e-3
    backbone_lr: float = 3e-4
    weight_decay: float = 1e-4
    momentum: float = 0.9
    warmup: int = 50             # steps of linear warm-up, then cosine decay to 0
    batch: int = 128
    steps: int = 300
    grad_clip: float = 5.0


@dataclass
class Adversarial:
    method: str = "none"         # none | fgsm | pgd
    eps: float = 4.0             # L-inf radius in 0..255 pixel units
    steps: int = 3
    fraction: float = 0.5        # share of each batch's queries replaced by attacked ones


@dataclass
class Compat:
    """Backward-compatible training: new queries must find the old model's catalogue vectors."""
    old_run: str = ""            # run directory of the old model; empty: off
    weight: float = 1.0


@dataclass
class Distill:
    teacher_run: str = ""        # run directory of the teacher; empty: off
    weight: float = 1.0


@dataclass
class Eval:
    catalogue: int = 10_000      # Fashion-MNIST test articles in the instance catalogue
    queries: int = 10_000        # scanner views searched against it
    attack_queries: int = 500
    attack_eps: float = 4.0
    attack_steps: int = 5


@dataclass
class Config:
    name: str = "run"
    seed: int = 0
    threads: int = 0             # 0: torch's default
    checkpoint_every: int = 100
    init_run: str = ""           # start from this run's weights (incremental training); empty: pretrained
    model: Model = field(default_factory=Model)
    data: Data = field(default_factory=Data)
    loss: Loss = field(default_factory=Loss)
    optim: Optim = field(default_factory=Optim)
    adversarial: Adversarial = field(default_factory=Adversarial)
    compat: Compat = field(default_factory=Compat)
    distill: Distill = field(default_factory=Distill)
    eval: Eval = field(default_factory=Eval)


ARCHS = ("lite0", "small", "native")   # image towers (models.ImageEncoder)
CHOICES = {  # checked when a config loads, before any data or model is touched
    ("model", "arch"): ARCHS, ("model", "norm"): ("batch", "group"),
    ("loss", "pair"): ("infonce", "cosine", "triplet", "none"), ("optim", "name"): ("adamw", "adam", "sgd"),
    ("adversarial", "method"): ("none", "fgsm", "pgd"),
}


def validate(cfg: "Config") -> "Config":
    for (part, key), allowed in CHOICES.items():
        v = getattr(getattr(cfg, part), key)
        if v not in allowed:
            raise ValueError(f"{part}.{key} = {v!r}: expected one of {', '.join(allowed)}")
    t = cfg.model.trainable
    if not (t in ("all", "head") or (t.partition(":")[0] in ("last", "lora") and t.partition(":")[2].isdigit()
                                     and int(t.partition(":")[2]) > 0)):
        raise ValueError(f"model.trainable = {t!r}: expected all, head, last:N or lora:R")
    if t != "all" and cfg.model.arch != "lite0":
        raise ValueError(f"model.trainable = {t!r} needs model.arch = \"lite0\"")
    for key in ("dim", "input_size"):
        if getattr(cfg.model, key) <= 0:
            raise ValueError(f"model.{key} must be positive")
    if cfg.loss.memory < 0 or (cfg.loss.memory and cfg.loss.pair != "infonce"):
        raise ValueError("loss.memory must be >= 0 and needs loss.pair = \"infonce\"")
    if cfg.loss.clean_supcon < 0 or cfg.loss.supcon_temperature <= 0:
        raise ValueError("loss.clean_supcon must be >= 0 and loss.supcon_temperature > 0")
    if cfg.optim.batch < 2 or cfg.optim.steps < 0:
        raise ValueError("optim.batch must be >= 2 and optim.steps >= 0")
    return cfg


def _build(cls, d: dict, where: str):
    known = {f.name: f for f in dataclasses.fields(cls)}
    kw = {}
    for k, v in d.items():
        if k not in known:
            raise ValueError(f"unknown setting {where}{k}")
        t = known[k].type
        if dataclasses.is_dataclass(known[k].default_factory() if known[k].default_factory
                                    is not dataclasses.MISSING else None):
            kw[k] = _build(type(known[k].default_factory()), v, f"{where}{k}.")
        else:
            kw[k] = v
    return cls(**kw)


def _coerce(text: str):
    import json
    try:
        return json.loads(text)
    except ValueError:
        return text


CONFIGS = os.path.join(os.path.dirname(__file__), "configs")


def resolve(path: str) -> str:
    """A config file, or the name of one shipped in skulens_train/configs/ ("main", "quick", ...)."""
    if os.path.exists(path):
        return path
    named = os.path.join(CONFIGS, f"{path}.toml")
    if os.path.exists(named):
        return named
    raise FileNotFoundError(f"no config {path!r} (a file, or one of {sorted(os.listdir(CONFIGS))})")


def load(path: str | None = None, overrides: list[str] = ()) -> Config:
    d: dict = {}
    if path:
        path = resolve(path)
        with open(path, "rb") as f:
            d = tomllib.load(f)
    for o in overrides:
        key, _, value = o.partition("=")
        if not _:
            raise ValueError(f"override {o!r} is not key=value")
        *parents, leaf = key.split(".")
        node = d
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = _coerce(value)
    return validate(_build(Config, d, ""))


def as_dict(cfg: Config) -> dict:
    return dataclasses.asdict(cfg)


def dump_toml(cfg: Config) -> str:
    """The resolved config, written beside every run so it can be reproduced."""
    lines = []
    top = {k: v for k, v in as_dict(cfg).items() if not isinstance(v, dict)}
    lines += [f"{k} = {_toml(v)}" for k, v in top.items()]
    for k, v in as_dict(cfg).items():
        if isinstance(v, dict):
            lines += ["", f"[{k}]"] + [f"{kk} = {_toml(vv)}" for kk, vv in v.items()]
    return "\n".join(lines) + "\n"


def _toml(v) -> str:
    import json
    if isinstance(v, bool):
        return "true" if v else "false"
    return json.dumps(v)
