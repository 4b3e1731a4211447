"""Scene search's objectness head: its file (skulens.encode.objectness), the trainer
(`skulens-train objectness`), export beside the image model, and what the server does with it."""

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

from skulens.data import datasets
from skulens.encode import objectness as O

ROOT = os.path.join(os.path.dirname(__file__), "..")


def _head(dim=8, floor=0.2, seed=0):
    rng = np.random.default_rng(seed)
    n = len(O.FEATURES) + dim
    return O.Objectness(rng.normal(size=n), rng.uniform(0.5, 2, n), rng.normal(size=n), -0.5, floor, {"image_model": "m"})


def test_the_file_round_trips_and_refuses_what_it_cannot_read(tmp_path):
    h = _head()
    h.save(str(tmp_path / O.FILE))
    back = O.load(str(tmp_path), 8)
    x = np.random.default_rng(1).normal(size=(5, len(O.FEATURES) + 8))
    assert np.array_equal(back.score(x), h.score(x)) and back.floor == 0.2 and back.meta["image_model"] == "m"
    assert ((back.score(x) > 0) & (back.score(x) < 1)).all()
    with pytest.raises(ValueError, match="fitted to 8-d"):
        O.load(str(tmp_path), 16)           # another model's head is an error, not a silent fallback
    doc = json.loads((tmp_path / O.FILE).read_text())
    doc["format"] = 99
    (tmp_path / O.FILE).write_text(json.dumps(doc))
    with pytest.raises(ValueError, match="format 99"):
        O.load(str(tmp_path), 8)
    assert O.load(str(tmp_path / "nothing-here"), 8) is None
    for broken in ('{"format": 1, "mean": [1', '[1, 2]', '{"format": 1, "mean": [1, 2]}'):
        (tmp_path / O.FILE).write_text(broken)   # truncated, not an object, fields missing
        with pytest.raises(ValueError, match=O.FILE):
            O.load(str(tmp_path), 8)


def test_features_are_scale_free_and_ranked_by_position():
    boxes = np.array([[0, 0, 10, 20], [5, 5, 45, 25]])
    f = O.features(boxes, (100, 200), np.array([3.0, 1.0]), np.array([0.9, 0.5]), np.ones((2, 4)))
    assert f.shape == (2, len(O.FEATURES) + 4)
    assert np.allclose(f[:, 1], np.log([200 / 20000, 800 / 20000])) and np.allclose(f[:, 2], np.log([0.5, 2.0]))
    assert np.allclose(f[:, 4], np.log1p([0, 1]))
    # the same picture at twice the pixels: the same features
    g = O.features(boxes * 2, (200, 400), np.array([3.0, 1.0]), np.array([0.9, 0.5]), np.ones((2, 4)))
    assert np.allclose(f, g)


needs_data = pytest.mark.skipif(not datasets.available(), reason="apt-get install dataset-fashion-mnist")


@needs_data
def test_the_shipped_head_is_exported_beside_the_image_model(shipped_repo):
    from skulens import encode
    enc = encode.load(shipped_repo)["image"]
    assert enc.objectness is not None and enc.objectness.dim == enc.dim
    assert enc.objectness.meta["image_model"] == enc.name
    assert 0.0 < enc.objectness.floor < 0.5


@needs_data
def test_scene_regions_score_the_heads_probability_and_without_a_head_the_cosine(shipped_repo, tmp_path):
    from conftest import serve_articles
    from skulens.data.scenes import SceneMaker
    from skulens.client import Client
    bare = str(tmp_path / "repo")
    shutil.copytree(shipped_repo, bare)
    os.remove(os.path.join(bare, "image_encoder", O.FILE))
    scene = SceneMaker(datasets.load("test")[0][:300], seed=3)(0).jpeg
    got = {}
    for name, repo in (("head", shipped_repo), ("bare", bare)):
        s = serve_articles(repo, str(tmp_path / name), 300)
        try:
            with Client(s.target, timeout=30) as c:
                r = c.search_scene(scene, top_k=3, max_regions=32, min_objectness=-1.0)
                got[name] = r
        finally:
            s.stop()
    head = [g.objectness for g in got["head"].regions]
    bare = [g.objectness for g in got["bare"].regions]
    assert head and bare and head == sorted(head, reverse=True) and bare == sorted(bare, reverse=True)
    assert all(0.0 <= p <= 1.0 for p in head)
    # without a head a region's score is its best hit's cosine
    assert all(abs(g.objectness - g.hits[0].score) < 1e-5 for g in got["bare"].regions)
    assert not all(abs(g.objectness - g.hits[0].score) < 1e-5 for g in got["head"].regions)


@needs_data
def test_the_trainer_fits_a_head_that_export_ships(shipped_repo, tmp_path):
    pytest.importorskip("sklearn")
    repo, run = str(tmp_path / "repo"), str(tmp_path / "run")
    shutil.copytree(shipped_repo, repo)
    os.remove(os.path.join(repo, "image_encoder", O.FILE))
    shutil.copytree(os.path.join(ROOT, "training", "shipped", "robust"), run)
    os.remove(os.path.join(run, O.FILE))
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([os.path.join(ROOT, "server"), os.path.join(ROOT, "training")]))
    bad = subprocess.run([sys.executable, "-m", "skulens_train", "objectness", "--run", run, "--model-repo", repo,
                          "fit_scenes=0"], env=env, capture_output=True, text=True)
    assert bad.returncode == 2 and "fit_scenes" in bad.stderr
    p = subprocess.run([sys.executable, "-m", "skulens_train", "objectness", "--run", run, "--model-repo", repo,
                        "--no-progress", "fit_scenes=12", "tune_scenes=6", "catalogue=400"],
                       env=env, capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stderr[-2000:]
    head = O.load(os.path.join(repo, "image_encoder"), 256)
    assert head is not None and head.meta["shelves"] == {**head.meta["shelves"], "fit": 12, "tune": 6}
    assert head.meta["positives"] > 0 and head.meta["candidates"] > head.meta["positives"]
    assert open(os.path.join(run, O.FILE)).read() == open(os.path.join(repo, "image_encoder", O.FILE)).read()
    # export carries the run's head into a fresh repository
    from skulens_train.export import export_image
    fresh = str(tmp_path / "fresh")
    export_image(run, fresh)
    assert O.load(os.path.join(fresh, "image_encoder"), 256).meta == head.meta


@needs_data
def test_serve_with_a_broken_head_says_which_file_in_one_line(shipped_repo, tmp_path):
    repo = str(tmp_path / "repo")
    shutil.copytree(shipped_repo, repo)
    head = os.path.join(repo, "image_encoder", O.FILE)
    with open(head) as f:
        text = f.read()
    with open(head, "w") as f:
        f.write(text[:len(text) // 2])          # a truncated copy
    exe = os.path.join(os.path.dirname(sys.executable), "skulens")
    r = subprocess.run([exe, "serve", "--data", str(tmp_path / "d"), "--model-repo", repo, "--port", "0"],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and O.FILE in r.stderr and "Traceback" not in r.stderr, r.stderr
    assert len(r.stderr.strip().splitlines()) == 1, r.stderr
