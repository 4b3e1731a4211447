"""skulens_train: losses, scanner views, fine-tuning modes, resume, evaluation metrics, config.
The end-to-end pipeline (quick config -> evaluate -> ONNX -> served) is in test_training_pipeline.py."""

import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="training needs torch (pip install torch==2.13.0)")

from skulens.data import datasets  # noqa: E402
from skulens_train import config as C  # noqa: E402
from skulens_train import losses  # noqa: E402
from skulens_train.evaluate import ranked, recall_map  # noqa: E402

needs_data = pytest.mark.skipif(not datasets.available(), reason="apt-get install dataset-fashion-mnist")


def _unit(x):
    return torch.nn.functional.normalize(x, dim=1)


# --- losses -----------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["infonce", "cosine", "triplet"])
def test_pair_losses_reward_matching_pairs(name):
    g = torch.Generator().manual_seed(0)
    c = _unit(torch.randn(32, 16, generator=g))
    labels = torch.arange(32)
    good = losses.PAIR_LOSSES[name](c, c, labels)
    bad = losses.PAIR_LOSSES[name](_unit(torch.randn(32, 16, generator=g)), c, labels)
    assert torch.isfinite(good) and torch.isfinite(bad)
    assert good < bad


def test_infonce_is_cross_entropy_over_the_batch():
    g = torch.Generator().manual_seed(1)
    q, c = _unit(torch.randn(8, 4, generator=g)), _unit(torch.randn(8, 4, generator=g))
    t = 0.1
    logits = q @ c.T / t
    want = 0.5 * (torch.nn.functional.cross_entropy(logits, torch.arange(8))
                  + torch.nn.functional.cross_entropy(logits.T, torch.arange(8)))
    assert torch.allclose(losses.infonce(q, c, torch.arange(8), t), want, atol=1e-6)


def test_supcon_matches_its_definition_and_rewards_clusters():
    g = torch.Generator().manual_seed(3)
    x = _unit(torch.randn(6, 5, generator=g))
    labels = torch.tensor([0, 0, 1, 1, 1, 2])   # row 5 has no positive: left out
    t = 0.2
    want = []
    for i in range(5):
        others = [a for a in range(6) if a != i]
        denom = torch.logsumexp(torch.stack([x[i] @ x[a] / t for a in others]), 0)
        pos = [p for p in others if labels[p] == labels[i]]
        want.append(-torch.stack([x[i] @ x[p] / t - denom for p in pos]).mean())
    assert torch.allclose(losses.supcon(x, labels, t), torch.stack(want).mean(), atol=1e-5)
    centres = _unit(torch.randn(3, 5, generator=g))
    tight = _unit(centres[labels] + 0.05 * torch.randn(6, 5, generator=g))
    assert losses.supcon(tight, labels, t) < losses.supcon(x, labels, t)
    assert losses.supcon(x, torch.arange(6), t) == 0   # nobody has a positive


def test_infonce_memory_adds_negatives_for_the_queries_only():
    g = torch.Generator().manual_seed(2)
    q, c = _unit(torch.randn(6, 8, generator=g)), _unit(torch.randn(6, 8, generator=g))
    mem = _unit(torch.randn(5, 8, generator=g))
    labels, t = torch.arange(6), 0.1
    F = torch.nn.functional
    # Empty rows (label -1) and rows of the query's own product are not negatives.
    empty = losses.infonce(q, c, labels, t, mem, torch.full((5,), -1))
    assert torch.allclose(empty, losses.infonce(q, c, labels, t), atol=1e-6)
    mem_labels = torch.tensor([0, 7, 8, -1, 3])
    got = losses.infonce(q, c, labels, t, mem, mem_labels)
    logits = q @ c.T / t
    rows = []
    for i in range(6):
        keep = [j for j in range(5) if mem_labels[j] >= 0 and mem_labels[j] != i]
        rows.append(F.cross_entropy(torch.cat([logits[i], q[i] @ mem[keep].T / t])[None], torch.tensor([i])))
    want = 0.5 * (torch.stack(rows).mean() + F.cross_entropy(logits.T, torch.arange(6)))
    assert torch.allclose(got, want, atol=1e-5)
    assert got > losses.infonce(q, c, labels, t)     # more negatives, a harder task
    # memory_skip drops chosen (query, memory row) pairs too: skipping all leaves the plain loss.
    skip_all = torch.ones(6, 5, dtype=torch.bool)
    assert torch.allclose(losses.infonce(q, c, labels, t, mem, mem_labels, skip_all),
                          losses.infonce(q, c, labels, t), atol=1e-6)
    skip_row1 = torch.zeros(6, 5, dtype=torch.bool)
    skip_row1[:, 1] = True                           # = memory row 1 empty
    assert torch.allclose(losses.infonce(q, c, labels, t, mem, mem_labels, skip_row1),
                          losses.infonce(q, c, labels, t, mem, torch.tensor([0, -1, 8, -1, 3])), atol=1e-6)


def test_memory_ring_keeps_the_newest_catalogue_vectors():
    from skulens_train.train import Objective, build_model
    cfg = C.load("quick", ["loss.memory=5", "model.width=8"])
    obj = Objective(cfg, build_model(cfg), 10)
    for start in (0, 3, 6):
        obj._remember(torch.full((3, cfg.model.dim), float(start)), torch.arange(start, start + 3),
                      torch.arange(start, start + 3) % 2)
    # 9 vectors through a ring of 5: ids 4..8 stay, the oldest overwritten first.
    assert sorted(obj.memory_ids.tolist()) == [4, 5, 6, 7, 8]
    assert not hasattr(obj, "memory_cats")       # kept only when the loss uses it
    assert int(obj.memory_next) == 9 % 5
    assert "memory" in obj.state_dict()          # checkpointed, so a resumed run has it
    with pytest.raises(ValueError, match="memory"):
        C.load("quick", ["loss.memory=8", "loss.pair=\"triplet\""])


def test_memory_other_categories_skips_the_queries_own_category():
    from skulens_train.train import Objective, build_model
    cfg = C.load("quick", ["loss.memory=4", "model.width=8", "loss.memory_other_categories=true",
                           "loss.category_weight=0"])
    obj = Objective(cfg, build_model(cfg), 10)
    obj.eval()                                   # no ring update, so the same memory both times
    x = torch.randn(8, 3, cfg.model.input_size, cfg.model.input_size)
    with torch.no_grad():
        e = obj.encoder(x)
    obj._remember(e[4:], torch.tensor([10, 11, 12, 13]), torch.tensor([0, 1, 0, 1]))
    assert obj.memory_cats.tolist() == [0, 1, 0, 1]
    inst, cat = torch.tensor([1, 2]), torch.tensor([0, 1])
    got = obj(x[:2], x[2:4], inst, cat)[1]["pair"]
    q, c = e[:2], e[2:4]
    # Query 0 (category 0) sees memory rows 1 and 3; query 1 sees rows 0 and 2.
    skip = torch.tensor([[True, False, True, False], [False, True, False, True]])
    want = losses.infonce(q, c, inst, cfg.loss.temperature, obj.memory, obj.memory_ids, skip)
    assert abs(got - float(want)) < 1e-5
    assert abs(got - float(losses.infonce(q, c, inst, cfg.loss.temperature, obj.memory, obj.memory_ids))) > 1e-4


@pytest.mark.parametrize("name", ["infonce", "cosine", "triplet"])
def test_pairs_sharing_a_label_are_not_pushed_apart(name):
    # Moving query 0 towards catalogue row 1 costs when row 1 is another product, not when it is
    # the same one (two views of a product, or one category).
    c = _unit(torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]]))
    far, near = c.clone(), c.clone()
    far[0] = _unit(torch.tensor([[1.0, 0.1, 0.0]]))[0]
    near[0] = _unit(torch.tensor([[1.0, 0.5, 0.0]]))[0]
    f = losses.PAIR_LOSSES[name]
    kw = {"margin": 0.9} if name != "infonce" else {}
    assert f(near, c, torch.tensor([0, 1, 2]), **kw) > f(far, c, torch.tensor([0, 1, 2]), **kw)
    assert f(near, c, torch.tensor([0, 0, 2]), **kw) <= f(far, c, torch.tensor([0, 0, 2]), **kw) + 1e-6


def test_triplet_mines_the_semi_hard_negative():
    # Anchor 0's positive is c0 (d 0.4); c1 is closer than the positive (d 0.2, not semi-hard);
    # c2 is farther (d 1.0): the semi-hard negative.
    q = _unit(torch.tensor([[1.0, 0.0, 0.0], [0.0, -1.0, 0.0], [0.0, 0.0, 1.0]]))
    c = _unit(torch.tensor([[0.8, 0.6, 0.0], [0.9, 0.436, 0.0], [0.5, 0.0, 0.866]]))
    per = losses.triplet_semihard(q, c, torch.tensor([0, 1, 2]), margin=0.7, reduction="none")
    d = 2 - 2 * q @ c.T
    assert d[0, 1] < d[0, 0] < d[0, 2]
    assert torch.allclose(per[0], torch.relu(d[0, 0] - d[0, 2] + 0.7), atol=1e-6)
    semi1 = [j for j in (0, 2) if d[1, j] > d[1, 1]]
    want1 = d[1, 1] - (min(d[1, j] for j in semi1) if semi1 else min(d[1, 0], d[1, 2])) + 0.7
    assert torch.allclose(per[1], torch.relu(want1), atol=1e-6)


@pytest.mark.parametrize("seed", range(5))
def test_normsoftmax_learns_proxies(seed):
    # Four classes around four directions; the proxies (their init seeded too, so the test does not
    # depend on what ran before it) must come to classify them.
    torch.manual_seed(seed)
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, 4, (64,), generator=g)
    x = _unit(_unit(torch.randn(4, 8, generator=g))[y] + 0.15 * torch.randn(64, 8, generator=g))
    head = losses.NormSoftmax(4, 8)
    opt = torch.optim.Adam(head.parameters(), lr=0.05)
    first = float(head(x, y).detach())
    for _ in range(100):
        opt.zero_grad()
        loss = head(x, y)
        loss.backward()
        opt.step()
    assert float(loss.detach()) < 0.5 * first
    predicted = (x @ torch.nn.functional.normalize(head.proxies, dim=1).T).argmax(1)
    assert (predicted == y).float().mean() > 0.9


# --- scanner views ----------------------------------------------------------------------------------
@needs_data
def test_scanner_views_are_seeded_and_degraded():
    from skulens.data.views import EVAL_BACKGROUNDS, ViewMaker, catalogue_image
    images, _ = datasets.load("test")
    a = ViewMaker(images[:4], 64, EVAL_BACKGROUNDS, seed=3)
    v1, v2 = a([0, 1, 2, 3]), a([0, 1, 2, 3])
    assert v1.shape == (4, 64, 64, 3) and v1.dtype == np.uint8
    assert np.array_equal(v1, v2)                                    # same seed, same views
    assert not np.array_equal(v1, a([0, 1, 2, 3], epoch=1))          # another epoch, other views
    clean = np.stack([catalogue_image(images[i], 64) for i in range(4)])
    assert clean.shape == v1.shape
    # Degraded, not copied: the views differ a lot from the catalogue pictures and from each other.
    assert np.abs(v1.astype(int) - clean).mean() > 20
    assert np.abs(v1[0].astype(int) - v1[1]).mean() > 10


def test_scanner_view_of_a_photo_keeps_the_photo_inside():
    from skulens.data.views import TRAIN_BACKGROUNDS, Backgrounds, ViewSpec, scanner_view
    photo = np.zeros((40, 40, 3), np.uint8)
    photo[..., 0] = 255                                              # a pure red product photo
    spec = ViewSpec(fill=(0.9, 0.9), max_rotation=0, perspective=0, blur=(0, 0), noise=(0, 0), jpeg=(95, 95),
                    brightness=(1, 1), contrast=(1, 1))
    v = scanner_view(photo, np.random.default_rng(0), 64, Backgrounds(TRAIN_BACKGROUNDS[:2]), spec)
    centre = v[24:40, 24:40].astype(int)
    assert centre[..., 0].mean() > 180 and centre[..., 1].mean() < 80


@needs_data
def test_shelf_views_crowd_glare_and_downscale_like_serving():
    from dataclasses import replace
    from skulens.data.views import TRAIN_BACKGROUNDS, Backgrounds, ViewMaker, ViewSpec, scanner_view
    images, _ = datasets.load("train")
    calm = ViewSpec(fill=(0.5, 0.5), max_rotation=0, perspective=0, blur=(0, 0), noise=(0, 0), jpeg=(95, 95),
                    brightness=(1, 1), contrast=(1, 1), cast=0.0)
    bg = Backgrounds(TRAIN_BACKGROUNDS[:2])
    black = np.zeros((28, 28), np.uint8)
    # White neighbours are drawn beside a red product, behind it: more white, the red kept whole.
    red = np.zeros((40, 40, 3), np.uint8)
    red[..., 0] = 255
    frames = {c: np.stack([scanner_view(red, np.random.default_rng(s), 64, bg, replace(calm, crowd=c),
                                        lambda rng: np.full((28, 28), 255, np.uint8)) for s in range(4)]).astype(int)
              for c in (0.0, 1.0)}
    white = {c: int((f.min(3) > 180).sum()) for c, f in frames.items()}
    reds = {c: int(((f[..., 0] > 200) & (f[..., 1] < 60)).sum()) for c, f in frames.items()}
    assert white[1.0] > white[0.0] + 1000, white
    assert abs(reds[1.0] - reds[0.0]) <= 0.05 * reds[0.0] and reds[0.0] > 500, reds
    # Glare brightens the frame; a larger frame comes back at the input size through fit_square.
    dark = replace(calm, glare=1.0)
    lit = [scanner_view(black, np.random.default_rng(s), 64, bg, dark).astype(int).sum() -
           scanner_view(black, np.random.default_rng(s), 64, bg, calm).astype(int).sum() for s in range(4)]
    assert min(lit) > 0
    big = scanner_view(images[0], np.random.default_rng(1), 64, bg, replace(calm, frame=(2.0, 2.0)))
    assert big.shape == (64, 64, 3)
    # Seeded like every protocol (neighbours come from the maker's own items).
    v = ViewMaker(images[:3], 64, seed=1, spec=ViewSpec.shelf())([0, 1, 2])
    assert v.shape == (3, 64, 64, 3) and np.array_equal(v, ViewMaker(images[:3], 64, seed=1,
                                                                       spec=ViewSpec.shelf())([0, 1, 2]))


# --- models ------------------------------------------------------------------------------------------
def test_lora_merge_keeps_the_function():
    from skulens_train.models import LoRAConv1x1
    conv = torch.nn.Conv2d(8, 16, 1)
    lora = LoRAConv1x1(conv, 4)
    torch.nn.init.normal_(lora.b.weight)                             # as if trained
    x = torch.randn(2, 8, 5, 5)
    with torch.no_grad():
        want = lora(x)
        got = lora.merged()(x)
    assert torch.allclose(want, got, atol=1e-5)


def test_fine_tuning_modes_train_what_they_say():
    from skulens_train.models import ImageEncoder, trainable_parameters
    n = {m: trainable_parameters(ImageEncoder("lite0", 64, m, pretrained=False))
         for m in ("head", "lora:4", "last:3", "all")}
    assert n["head"] == 1280 * 64 + 64
    assert n["head"] < n["lora:4"] < n["last:3"] < n["all"]
    m = ImageEncoder("lite0", 64, "last:3", pretrained=False).train()
    frozen_bn = m.frozen_modules()
    assert frozen_bn and all(not b.training for b in frozen_bn)       # pretrained statistics kept
    x = torch.randn(2, 3, 64, 64)
    m(x).sum().backward()
    assert all(p.grad is None for p in m.backbone.net._blocks[0].parameters())
    assert all(p.grad is not None for p in m.backbone.net._blocks[-1].parameters())
    with pytest.raises(ValueError, match="unknown trainable"):
        ImageEncoder("lite0", 64, "some", pretrained=False)
    with pytest.raises(ValueError, match="lite0"):
        ImageEncoder("small", 64, "head")


def test_lora_model_merges_for_export():
    from skulens_train.models import ImageEncoder
    m = ImageEncoder("lite0", 32, "lora:4", pretrained=False).eval()
    for mod in m.modules():
        if hasattr(mod, "b") and isinstance(getattr(mod, "b"), torch.nn.Conv2d):
            torch.nn.init.normal_(mod.b.weight, std=0.01)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        want = m(x)
        got = m.merge_adapters()(x)
    assert not any(type(mod).__name__ == "LoRAConv1x1" for mod in m.modules())
    assert torch.allclose(want, got, atol=1e-4)


# --- config --------------------------------------------------------------------------------------------
def test_config_names_overrides_and_errors(tmp_path):
    cfg = C.load("quick", ["optim.steps=7", "model.arch=\"lite0\"", "model.trainable=\"last:2\"", "data.classes=[1,2]"])
    assert cfg.optim.steps == 7 and cfg.model.trainable == "last:2" and cfg.data.classes == [1, 2]
    p = tmp_path / "x.toml"
    p.write_text(C.dump_toml(cfg))
    assert C.load(str(p)) == cfg                                     # the written config reproduces the run
    with pytest.raises(ValueError, match="unknown setting optim.stepz"):
        C.load("quick", ["optim.stepz=1"])
    with pytest.raises(FileNotFoundError, match="no config"):
        C.load("nope")
    # Bad values are refused when the config loads, before any data or model is touched.
    for over, msg in (("model.arch=\"resnet\"", "model.arch"), ("loss.pair=\"bogus\"", "loss.pair"),
                      ("model.trainable=\"lora:x\"", "model.trainable"), ("optim.batch=1", "optim.batch"),
                      ("model.trainable=\"head\"", "needs model.arch"), ("loss.clean_supcon=-1", "clean_supcon"),
                      ("loss.supcon_temperature=0", "supcon_temperature")):
        with pytest.raises(ValueError, match=msg):
            C.load("quick", [over])


def test_cli_bad_input_is_one_clear_line(tmp_path):
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    for args, msg in ((["fit", "--config", "quick", "optim.stepz=3"], "unknown setting optim.stepz"),
                      (["evaluate", "--run", str(tmp_path / "none")], "no finished run"),
                      (["category", "sise=64"], "unknown setting sise"),
                      (["category", "views=128"], "views=128: 0..optim.batch-1"),
                      (["category", "model.width=abc"], "'model.width=abc': model.width takes an integer"),
                      (["fit", "--config", "quick", "optim.steps=abc"], "optim.steps takes an integer"),
                      (["text", "optim.lr=fast"], "'optim.lr=fast': optim.lr takes a number")):
        r = subprocess.run([sys.executable, "-m", "skulens_train", *args], env=env, capture_output=True, text=True)
        assert r.returncode == 2 and msg in r.stderr and "Traceback" not in r.stderr


@needs_data
def test_category_probe_learns_categories_and_scores_every_epoch(tmp_path):
    from skulens_train.category_probe import probe, shift_flip

    def opts_of(**o):
        return C.load(None, [f"{k}={v}" for k, v in o.items()], C.Probe)
    x = np.zeros((2, 16, 16, 3), np.uint8)
    x[:, 8, 3] = 255
    y = shift_flip(x, np.random.default_rng(0)).numpy()
    assert y.shape == x.shape and (y.reshape(2, -1).sum(1) == 3 * 255).all()  # moved, never lost (shift <= 2)
    opts = {"model.arch": "small", "model.input_size": 32, "train_limit": 2048, "test_limit": 500, "threads": 1,
            "model.dim": 32, "optim.lr": 3e-3, "optim.backbone_lr": 3e-3, "optim.warmup": 5}
    untrained = probe(opts_of(**opts, epochs=0.02), str(tmp_path / "u.json"), progress=False)  # one step
    res = probe(opts_of(**opts, epochs=4.0), str(tmp_path / "p.json"), progress=False)
    assert [e["epoch"] for e in res["log"]] == [1.0, 2.0, 3.0, 4.0] and (tmp_path / "p.json").exists()
    # Random conv features already sort Fashion-MNIST somewhat (R@1 ~0.57, mAP@R ~0.18 after one step);
    # four epochs on 2k pictures must tighten the categories well beyond that (measured 0.68, 0.44).
    assert res["category R@1"] > untrained["category R@1"] + 0.05
    assert res["category mAP@R"] > untrained["category mAP@R"] + 0.15


@needs_data
def test_category_probe_with_views_trains_on_them_and_scores_them(tmp_path, monkeypatch):
    from skulens_train import category_probe as cp
    made = []

    class Spy(cp.ViewMaker):  # records what the training batches ask for; the views are real
        def __call__(self, indices, epoch=0):
            made.append(len(indices))
            return super().__call__(indices, epoch)
    monkeypatch.setattr(cp, "ViewMaker", Spy)
    opts = C.load(None, ["model.arch=native", "model.input_size=32", "train_limit=1024", "test_limit=300",
                         "threads=1", "model.dim=32", "optim.lr=3e-3", "optim.backbone_lr=3e-3", "optim.warmup=5",
                         "optim.batch=64", "views=16", "epochs=2.0"], C.Probe)
    res = cp.probe(opts, str(tmp_path / "v.json"), progress=False)
    # 1,024 clean pictures at 48 a step: 21 steps of 48 clean + 16 views (the held-out views come from
    # evaluate.held_out_views, the benchmark's own, and are not counted here).
    assert res["steps"] == 42 and made == [16] * 42
    assert [e["epoch"] for e in res["log"]] == [1.0, 2.0]
    assert all(0 <= e["view category R@1"] <= 1 for e in res["log"]) and "view category R@1" in res
    assert cp.default_path("runs", opts).endswith("category-native-32px-2ep-16views.json")


def test_native_cnn_sees_the_articles_at_32_px():
    from skulens_train.models import ImageEncoder
    torch.manual_seed(0)
    m = ImageEncoder("native", 24, width=8).eval()
    x = torch.randn(3, 3, 64, 64)
    with torch.no_grad():
        y, y32 = m(x), m(torch.nn.functional.avg_pool2d(x, 2))
    assert y.shape == (3, 24) and torch.allclose(y.norm(dim=1), torch.ones(3))
    assert torch.allclose(y, y32, atol=1e-6)  # a 64 px picture is read as its 32 px average


# --- metrics -------------------------------------------------------------------------------------------
def test_recall_and_map_at_r_on_a_known_case():
    g = np.array([[1, 0], [0.9, 0.1], [0, 1], [0.1, 0.9]], np.float32)
    g /= np.linalg.norm(g, axis=1, keepdims=True)
    r = recall_map(g, g, np.array([0, 0, 1, 1]), np.array([0, 0, 1, 1]), exclude_self=True)
    assert r == {"R@1": 1.0, "R@5": 1.0, "R@10": 1.0, "mAP@R": 1.0}
    r = recall_map(g, g, np.array([0, 1, 0, 1]), np.array([0, 1, 0, 1]), exclude_self=True)
    assert r["R@1"] == 0.0 and r["R@5"] == 1.0 and r["mAP@R"] == 0.0
    # mAP@R with R = 2: relevant at ranks 1 and 3 -> (1/1 + 2/3) / 2, but only ranks <= R count: 1/2.
    q = np.array([[1.0, 0.0]], np.float32)
    gal = np.array([[1.0, 0.0], [0.8, 0.6], [0.6, 0.8]], np.float32)
    r = recall_map(q, gal, np.array([0]), np.array([0, 1, 0]), ks=(1,))
    assert r["mAP@R"] == pytest.approx(0.5)
    assert ranked(q, gal, 3)[0].tolist() == [0, 1, 2]


# --- resume ----------------------------------------------------------------------------------------------
@needs_data
def test_a_killed_run_resumes_to_the_same_weights(tmp_path):
    over = ["name=\"r\"", "threads=1", "optim.steps=8", "optim.batch=16", "checkpoint_every=2",
            "data.train_limit=200", "model.width=8", "eval.queries=0", "loss.memory=24"]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    cmd = [sys.executable, "-m", "skulens_train", "fit", "--no-progress", "--config", "quick"]
    subprocess.run(cmd + ["--run", str(tmp_path / "straight")] + over, check=True, env=env, capture_output=True)
    # Kill the second run with SIGKILL once it has checkpointed, then let it resume.
    p = subprocess.Popen(cmd + ["--run", str(tmp_path / "killed")] + over + ["optim.steps=8"], env=env,
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    ckpt = tmp_path / "killed" / "checkpoint.pt"
    deadline = time.time() + 120
    while not ckpt.exists() and time.time() < deadline and p.poll() is None:
        time.sleep(0.02)
    p.send_signal(signal.SIGKILL)
    p.wait()
    step = torch.load(ckpt, weights_only=False)["step"] if ckpt.exists() else 0
    subprocess.run(cmd + ["--run", str(tmp_path / "killed")] + over, check=True, env=env, capture_output=True)
    a = torch.load(tmp_path / "straight" / "model.pt")
    b = torch.load(tmp_path / "killed" / "model.pt")
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a), f"resumed from step {step} and diverged"


def test_fit_on_a_catalogue_folder(tmp_path):
    """Users' own data: a folder of product photos + CSV, the format `skulens ingest` reads."""
    import csv
    import skimage.data as sd
    from PIL import Image
    from skulens_train.train import fit, load_run
    rows = []
    for i, (name, cat) in enumerate([("chelsea", "pets"), ("astronaut", "people"), ("coffee", "drinks"),
                                     ("rocket", "vehicles"), ("horse", "pets"), ("camera", "people")]):
        Image.fromarray(getattr(sd, name)()).convert("RGB").save(tmp_path / f"p{i}.jpg")
        rows.append({"id": f"p{i}", "sku": f"S{i}", "title": name, "category": cat, "attributes": "{}",
                     "image": f"p{i}.jpg"})
    with open(tmp_path / "products.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    cfg = C.load("quick", [f"data.folder=\"{tmp_path}\"", f"data.meta=\"{tmp_path / 'products.csv'}\"",
                           "optim.steps=2", "optim.batch=16", "model.width=8", "threads=1"])
    fit(cfg, str(tmp_path / "run"), progress=False)
    _, model = load_run(str(tmp_path / "run"))
    assert model(torch.zeros(1, 3, 64, 64)).shape == (1, 256)
