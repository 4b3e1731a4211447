"""Distributed training: torchrun with 2 gloo processes takes the same steps as one process on the
whole batch (embeddings gathered across processes, gradients averaged by DDP), and every process
ends with the same weights."""

import json
import os
import shutil
import subprocess
import sys

import pytest

torch = pytest.importorskip("torch", reason="training needs torch (pip install torch==2.13.0)")

from skulens.data import datasets  # noqa: E402

pytestmark = pytest.mark.skipif(not datasets.available(), reason="apt-get install dataset-fashion-mnist")

# GroupNorm: a BatchNorm step depends on how the batch is split, which is not what is tested here.
OVERRIDES = ["name=\"ddp\"", "threads=1", "optim.steps=6", "optim.batch=32", "optim.name=\"sgd\"",
             "optim.lr=0.05", "data.train_limit=400", "model.width=16", "model.norm=\"group\"",
             "loss.category_weight=0.5", "data.classes_per_batch=3", "loss.memory=48"]


def test_two_processes_match_one(tmp_path):
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path), OMP_NUM_THREADS="1")
    one, two = str(tmp_path / "one"), str(tmp_path / "two")
    # (--runs + name, not --run: torchrun would take "--run" for an abbreviation of its --run-path)
    base = ["-m", "skulens_train", "fit", "--no-progress", "--config", "quick", "--runs", str(tmp_path)]
    subprocess.run([sys.executable, *base, *OVERRIDES, "name=\"one\""], check=True, env=env, capture_output=True)
    torchrun = shutil.which("torchrun", path=os.path.dirname(sys.executable)) or "torchrun"
    r = subprocess.run([torchrun, "--standalone", "--nproc_per_node", "2", *base, *OVERRIDES, "name=\"two\""],
                       env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    info = json.load(open(os.path.join(two, "train.json")))
    assert info["processes"] == 2
    assert info["max_weight_gap_between_processes"] == 0.0       # gradients stayed in sync
    a = torch.load(os.path.join(one, "model.pt"))
    b = torch.load(os.path.join(two, "model.pt"))
    start = torch.load(os.path.join(one, "model.pt"))
    gap = max(float((a[k] - b[k]).abs().max()) for k in a)
    assert gap < 1e-4, gap
    # And the runs did move the weights (the comparison is not between two untouched nets).
    log = [json.loads(line) for line in open(os.path.join(two, "log.jsonl"))]
    assert len(log) == 6 and log[-1]["loss"] != log[0]["loss"]
    assert start.keys() == b.keys()
