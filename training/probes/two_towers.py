"""Session 8's two cheap ideas for clean category, scored by the benchmark itself (docs/training.md):
  two towers in one vector: [a(x), w * b(x)] / norm, for a few weights w;
  test-time flip: a(x) + a(mirror of x), normalised.
  python training/probes/two_towers.py training/runs/main training/runs/probes/catonly2000
"""
import json
import sys

import numpy as np
import torch

from skulens_train.evaluate import Benchmark, embed
from skulens_train.train import load_run

KEYS = ("category R@1", "instance R@1", "instance R@10", "view category R@1")


def unit(x):
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def main(run_a: str, run_b: str) -> None:
    torch.set_num_threads(2)
    bench = Benchmark(64, 10_000, 10_000)
    (_, a), (_, b) = load_run(run_a), load_run(run_b)
    cache = {}

    def vectors(model, px, flip=False):
        key = (id(model), id(px), flip)
        if key not in cache:
            cache[key] = embed(model, np.ascontiguousarray(px[:, :, ::-1]) if flip else px)
        return cache[key]

    rows = {}
    for w in (0.0, 0.3, 0.5, 0.7, 0.85, 1.0, 1.2, 1.5):
        res = bench.run(None, embed_fn=lambda px, d=None, m=None, w=w:
                        unit(np.concatenate([vectors(a, px), w * vectors(b, px)], 1)))
        rows[f"concat w={w:g}"] = {k: res[k] for k in KEYS}
    res = bench.run(None, embed_fn=lambda px, d=None, m=None: unit(vectors(a, px) + vectors(a, px, True)))
    rows["flip average"] = {k: res[k] for k in KEYS}
    print(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main(*sys.argv[1:3])
