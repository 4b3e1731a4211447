"""The methods table: each row = configs/experiment.toml + overrides, same budget.

    python -m skulens_train experiments [--only NAME ...]     (finished rows are skipped)

Rows write RUNS/experiments/<name>/{config.toml, log.jsonl, model.pt, eval.json}; the report
(python -m skulens_train report) turns them into a table and plots.
"""

from __future__ import annotations

import json
import os

ROWS: list[tuple[str, str, dict]] = [
    # (group, name, overrides)
    ("loss", "infonce", {}),
    ("loss", "cosine", {"loss.pair": "cosine"}),
    ("loss", "triplet-semihard", {"loss.pair": "triplet"}),
    ("loss", "normsoftmax", {"loss.pair": "none", "loss.category_weight": 1.0}),
    ("loss", "infonce+normsoftmax", {"loss.category_weight": 0.5}),
    ("optimiser", "sgd-momentum", {"optim.name": "sgd", "optim.lr": 0.05, "optim.backbone_lr": 0.02}),
    ("augmentation", "augment-off", {"data.augment": False}),
    ("hard negatives", "4-categories-per-batch", {"data.classes_per_batch": 4}),
    ("adversarial", "pgd-training", {"adversarial.method": "pgd"}),
    ("peft", "head-only", {"model.trainable": "head", "optim.lr": 3e-3}),
    ("peft", "last-3-blocks", {"model.trainable": "last:3"}),
    ("peft", "lora-r8", {"model.trainable": "lora:8"}),
    ("architecture", "small-cnn-scratch", {"model.arch": "small", "model.pretrained": False}),
    # Incremental: the old model knows seven categories; three arrive later. Each update gets half
    # the budget (75 steps): the point is what an update costs, not training from scratch.
    ("incremental", "old-7-classes", {"data.classes": [0, 1, 2, 3, 4, 5, 6]}),
    ("incremental", "new-naive", {"init_run": "{runs}/experiments/old-7-classes", "optim.steps": 75}),
    ("incremental", "new-bct", {"init_run": "{runs}/experiments/old-7-classes", "optim.steps": 75,
                                "compat.old_run": "{runs}/experiments/old-7-classes"}),
    # Distillation: the shipped model (main) teaches the small CNN.
    ("distillation", "small-cnn-distilled", {"model.arch": "small", "model.pretrained": False,
                                             "distill.teacher_run": "{runs}/main"}),
]


def run_rows(runs: str, only=(), progress: bool = True) -> None:
    import torch
    from . import config as C
    from .evaluate import Benchmark, latency_ms
    from .train import fit, load_run
    base = "experiment"
    bench = None
    for group, name, over in ROWS:
        if only and name not in only:
            continue
        out = os.path.join(runs, "experiments", name)
        if os.path.exists(os.path.join(out, "eval.json")):
            continue
        over = {k: (v.format(runs=runs) if isinstance(v, str) else v) for k, v in over.items()}
        needs = [v for k, v in over.items() if k in ("init_run", "compat.old_run", "distill.teacher_run")]
        if any(not os.path.exists(os.path.join(n, "model.pt")) for n in needs):
            print(f"skip {name}: needs {needs}")
            continue
        cfg = C.load(base, [f"name={json.dumps(name)}"] + [f"{k}={json.dumps(v)}" for k, v in over.items()])
        torch.set_num_threads(cfg.threads or torch.get_num_threads())
        model = fit(cfg, out, progress=progress)
        bench = bench or Benchmark(cfg.model.input_size, cfg.eval.catalogue, cfg.eval.queries)
        e = cfg.eval
        res = bench.run(model, name, attack=(e.attack_queries, e.attack_eps, e.attack_steps))
        if group == "incremental" and name != "old-7-classes":
            old = load_run(cfg.init_run)[1]
            res["old catalogue, new queries"] = bench.run(old, name, query_model=model)
        res.update(group=group, latency_ms_batch1=latency_ms(model, cfg.model.input_size))
        with open(os.path.join(out, "train.json")) as f:
            res["train"] = json.load(f)
        with open(os.path.join(out, "eval.json"), "w") as f:
            json.dump(res, f, indent=1)
        print(f"{name}: instance R@1 {res['instance R@1']:.3f}  category R@1 {res['category R@1']:.3f}")
