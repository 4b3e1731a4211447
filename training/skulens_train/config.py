"""Run configuration: a TOML file, every field with a default, overridable with `key=value`.

One grammar for every recipe: `Config` (image fit), `Text` (the text branch) and `Probe` (the
clean-category probe) are dataclasses read by the same loader (`load`), so `optim.lr=2e-3` or
`model.input_size=96` means the same thing in `fit`, `text` and `category`. Values are JSON
(a bare word is a string) and are checked against the field's type when they load."""

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
    views: str = "standard"      # standard | wide | shelf (skulens.data.views.ViewSpec: wide() randomised,
    #                              shelf() also crowded, glare, frames drawn larger and downscaled as served)
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
    warmup: int = 50             # steps of linear warm-up (see schedule)
    batch: int = 128
    steps: int = 300
    grad_clip: float = 5.0       # 0: off
    schedule: str = "warmup_cosine"   # warmup_cosine | ramp_cosine | onecycle (loop.schedule)


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


@dataclass
class Text:
    """The text branch (`skulens-train text`): a sentence model mapped into an image run's space."""
    name: str = "text"
    seed: int = 0
    arch: str = "minilm"         # minilm (frozen MiniLM + a trained projection) | bilstm (from scratch)
    image_run: str = ""          # the image run whose space the titles are mapped into
    images: int = 6000           # training pictures whose vectors the titles are pulled to
    queries: int = 2000          # scanner views of the evaluation
    optim: Optim = field(default_factory=lambda: Optim(lr=2e-3, batch=256, steps=300, warmup=30, grad_clip=0.0,
                                                       schedule="onecycle"))


@dataclass
class Probe:
    """The clean-category capacity probe (`skulens-train category`, category_probe.py)."""
    seed: int = 0
    threads: int = 2
    epochs: float = 3.0          # passes over the clean training pictures (sets the step count)
    views: int = 0               # of each batch, scanner views of its first `views` articles
    train_limit: int = 0         # 0: all 60,000
    test_limit: int = 0          # 0: all 10,000
    model: Model = field(default_factory=Model)
    optim: Optim = field(default_factory=lambda: Optim(grad_clip=0.0, schedule="ramp_cosine"))


@dataclass
class Objectness:
    """The scene-search objectness head (`skulens-train objectness`, objectness.py)."""
    seed: int = 1                # shelves fit_scenes come from this seed, the tuning ones from seed + 1
    fit_scenes: int = 400
    tune_scenes: int = 200
    catalogue: int = 10_000      # training articles in the catalogue the crops are searched in
    c: float = 1.0               # inverse L2 strength of the logistic regression
    floor_loss: float = 0.0      # the default floor: the highest one losing at most this much found


ARCHS = ("lite0", "small", "native")   # image towers (models.ImageEncoder)
CHOICES = {  # checked when a config loads, before any data or model is touched
    ("model", "arch"): ARCHS, ("model", "norm"): ("batch", "group"),
    ("loss", "pair"): ("infonce", "cosine", "triplet", "none"), ("optim", "name"): ("adamw", "adam", "sgd"),
    ("adversarial", "method"): ("none", "fgsm", "pgd"),
    ("optim", "schedule"): ("warmup_cosine", "ramp_cosine", "onecycle"),
}


def _choices(cfg) -> None:
    for (part, key), allowed in CHOICES.items():
        if hasattr(cfg, part):
            v = getattr(getattr(cfg, part), key)
            if v not in allowed:
                raise ValueError(f"{part}.{key} = {v!r}: expected one of {', '.join(allowed)}")
    o = cfg.optim
    if o.batch < 2 or o.steps < 0 or o.warmup < (1 if o.schedule != "warmup_cosine" else 0):
        raise ValueError("optim.batch must be >= 2, optim.steps >= 0 and optim.warmup >= 1 "
                         "(>= 0 for warmup_cosine)")


def validate(cfg):
    """Refuse what cannot run, naming the setting, before any data or model is touched."""
    if isinstance(cfg, Objectness):
        if min(cfg.fit_scenes, cfg.tune_scenes, cfg.catalogue) < 1 or cfg.c <= 0 or cfg.floor_loss < 0:
            raise ValueError("fit_scenes, tune_scenes and catalogue must be >= 1, c > 0, floor_loss >= 0")
        return cfg
    _choices(cfg)
    if hasattr(cfg, "model"):
        for key in ("dim", "input_size"):
            if getattr(cfg.model, key) <= 0:
                raise ValueError(f"model.{key} must be positive")
    if isinstance(cfg, Text):
        if cfg.arch not in ("minilm", "bilstm"):
            raise ValueError(f"arch = {cfg.arch!r}: expected minilm or bilstm")
        return cfg
    if isinstance(cfg, Probe):
        if not 0 <= cfg.views < cfg.optim.batch:
            raise ValueError(f"views={cfg.views}: 0..optim.batch-1 (optim.batch={cfg.optim.batch})")
        if cfg.epochs < 0:
            raise ValueError("epochs must be >= 0")
        return cfg
    t = cfg.model.trainable
    if not (t in ("all", "head") or (t.partition(":")[0] in ("last", "lora") and t.partition(":")[2].isdigit()
                                     and int(t.partition(":")[2]) > 0)):
        raise ValueError(f"model.trainable = {t!r}: expected all, head, last:N or lora:R")
    if t != "all" and cfg.model.arch != "lite0":
        raise ValueError(f"model.trainable = {t!r} needs model.arch = \"lite0\"")
    if cfg.loss.memory < 0 or (cfg.loss.memory and cfg.loss.pair != "infonce"):
        raise ValueError("loss.memory must be >= 0 and needs loss.pair = \"infonce\"")
    if cfg.loss.clean_supcon < 0 or cfg.loss.supcon_temperature <= 0:
        raise ValueError("loss.clean_supcon must be >= 0 and loss.supcon_temperature > 0")
    return cfg


_KINDS = {"int": (int, "an integer"), "float": ((int, float), "a number"), "bool": (bool, "true or false"),
          "str": (str, "text"), "list[int]": (list, "a list of integers")}


def _build(cls, d: dict, where: str, defaults=None):
    """cls from a (nested) dict; sections start from the default of that field (defaults: the
    instance whose fields give them), so a recipe's own defaults stay under an override."""
    known = {f.name: f for f in dataclasses.fields(cls)}
    base = defaults if defaults is not None else cls()
    kw = {}
    for k, v in d.items():
        if k not in known:
            raise ValueError(f"unknown setting {where}{k}")
        current = getattr(base, k)
        if dataclasses.is_dataclass(current):
            if not isinstance(v, dict):
                raise ValueError(f"{where}{k} is a section: set its fields ({where}{k}.name=value)")
            kw[k] = _build(type(current), v, f"{where}{k}.", current)
            continue
        types, kind = _KINDS.get(str(known[k].type), (object, "a value"))
        if isinstance(v, bool) and types is not bool or not isinstance(v, types):
            if types is str and isinstance(v, (int, float)) and not isinstance(v, bool):
                v = str(v)   # name=123: a name, not a number
            else:
                raise ValueError(f"'{where}{k}={v}': {where}{k} takes {kind}")
        kw[k] = float(v) if kind == "a number" else v
    return dataclasses.replace(base, **kw)


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


def load(path: str | None = None, overrides: list[str] = (), cls=None):
    """A `cls` (default Config) from a TOML file (or a shipped config's name) and key=value overrides."""
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
    return validate(_build(cls or Config, d, ""))


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
