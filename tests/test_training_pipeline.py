"""The training pipeline end to end with the quick config (CI's budget): fit -> evaluate -> export
to ONNX -> served by the real gRPC server, for the image model and the aligned text branch."""

import io
import json
import os
import subprocess
import sys

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="training needs torch (pip install torch==2.13.0)")

from skulens.data import datasets  # noqa: E402

pytestmark = pytest.mark.skipif(not datasets.available(), reason="apt-get install dataset-fashion-mnist")


def _cli(*args, check=True):
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    return subprocess.run([sys.executable, "-m", "skulens_train", *args, "--no-progress"], check=check, env=env,
                          capture_output=True, text=True)


@pytest.fixture(scope="module")
def quick(tmp_path_factory):
    root = tmp_path_factory.mktemp("train")
    run = str(root / "quick")
    _cli("fit", "--config", "quick", "--run", run)
    _cli("evaluate", "--run", run)
    return root, run


def test_quick_run_records_everything_to_reproduce_it(quick):
    _, run = quick
    for f in ("config.toml", "log.jsonl", "checkpoint.pt", "model.pt", "train.json", "eval.json"):
        assert os.path.exists(os.path.join(run, f)), f
    log = [json.loads(line) for line in open(os.path.join(run, "log.jsonl"))]
    assert [r["step"] for r in log] == list(range(1, 61))
    first, last = np.mean([r["loss"] for r in log[:10]]), np.mean([r["loss"] for r in log[-10:]])
    assert last < 0.8 * first, (first, last)


def test_training_beats_the_untrained_network(quick):
    root, run = quick
    trained = json.load(open(os.path.join(run, "eval.json")))
    untrained = str(root / "untrained")
    _cli("fit", "--config", "quick", "--run", untrained, "optim.steps=0")
    _cli("evaluate", "--run", untrained)
    base = json.load(open(os.path.join(untrained, "eval.json")))
    # Scanner views land in the right category far more often once trained.
    assert trained["view category R@1"] > base["view category R@1"] + 0.1, (trained, base)
    assert trained["instance R@10"] > base["instance R@10"]
    for k in ("category R@1", "category mAP@R", "instance R@1", "instance R@5", "instance R@10",
              "instance R@1 PGD eps=4", "batch encode ms/image"):
        assert k in trained


def test_a_continued_run_starts_from_the_earlier_proxies(quick, tmp_path):
    """A stage that continues a run takes over its trained category proxies (its checkpoint has
    them); a run without a checkpoint (shipped weights only) starts them at the class means."""
    import shutil
    from skulens_train import config as C
    from skulens_train.data import fashion_mnist
    from skulens_train.train import Objective, _init_proxies, build_model, load_run
    _, run = quick
    cfg = C.load(os.path.join(run, "config.toml"))
    items = fashion_mnist("train", cfg.model.input_size, 300)
    trained = torch.load(os.path.join(run, "checkpoint.pt"), weights_only=False)["objective"]["proxies.proxies"]

    def started(from_run):
        obj = Objective(cfg, build_model(cfg), len(items.categories))
        obj.encoder.load_state_dict(load_run(from_run)[1].state_dict())
        _init_proxies(obj, from_run, items)
        return obj.proxies.proxies.detach()
    assert torch.equal(started(run), trained)
    bare = tmp_path / "weights-only"
    bare.mkdir()
    for f in ("config.toml", "model.pt"):
        shutil.copy(os.path.join(run, f), bare / f)
    means = started(str(bare))
    assert not torch.allclose(means, trained)
    assert torch.allclose(means.norm(dim=1), torch.ones(len(means)), atol=1e-5)


def test_export_serves_the_trained_model_like_torch(quick, tmp_path):
    from skulens.encode import ImageEncoder
    from skulens_train.train import load_run
    from skulens.data.views import catalogue_image
    from skulens_train.models import normalise_pixels
    from PIL import Image
    _, run = quick
    repo = str(tmp_path / "repo")
    _cli("export", "--run", run, "--model-repo", repo)
    meta = json.load(open(os.path.join(repo, "image_encoder", "skulens.json")))
    assert meta["min_cosine_onnx_vs_torch"] >= 0.9999 and meta["input_size"] == 64
    assert "config.toml" in meta["run"] and os.path.exists(os.path.join(repo, "image_encoder", "config.pbtxt"))
    # The server's path (PNG bytes -> decode -> preprocess -> ONNX) equals training's (torch).
    images, _ = datasets.load("test")
    enc = ImageEncoder(os.path.join(repo, "image_encoder"))
    pngs = []
    for im in images[:8]:
        buf = io.BytesIO()
        Image.fromarray(im).save(buf, "PNG")
        pngs.append(buf.getvalue())
    served = enc.embed(pngs)
    _, model = load_run(run)
    with torch.no_grad():
        want = model(normalise_pixels(torch.from_numpy(np.stack([catalogue_image(im, 64) for im in images[:8]])))).numpy()
    assert (served * want).sum(1).min() >= 0.9999


@pytest.fixture(scope="module")
def exported(quick, tmp_path_factory):
    """The quick image run and a short MiniLM text branch on it, exported as `make models` does."""
    from skulens_train.text import evaluate_text, fit_text
    from skulens_train.evaluate import Benchmark
    root, run = quick
    repo = str(tmp_path_factory.mktemp("exported"))
    text_run = str(root / "text-minilm")
    from skulens_train import config as C
    fit_text(C.load(None, [f"image_run={run}", "optim.steps=40", "optim.warmup=4", "optim.batch=128",
                           "images=1000"], C.Text), text_run, progress=False)
    res = evaluate_text(text_run, Benchmark(64, catalogue=500, queries=200))
    assert 0 <= res["text->image R@1 (held-out words)"] <= 1 and "image+text: view category R@1" in res
    _cli("export", "--run", run, "--model-repo", repo, "--text", text_run)
    return repo


def test_the_server_answers_with_the_trained_models(exported, tmp_path):
    from PIL import Image
    from skulens import encode as encoders
    from skulens.client import Client
    from skulens.server import Config, Server
    enc = encoders.load(exported)
    assert enc["image"].dim == enc["text"].dim == 256          # one space: text searches the images
    # The text model is served as dynamic int8 (the default export), measured against its fp32 graph.
    meta = encoders.model_repo.read_meta(f"{exported}/text_encoder")
    q = meta["quantization"]["measured"]
    assert meta["name"].endswith("-int8") and q["int8"]["cosine vs fp32 (titles)"]["mean"] >= 0.97
    assert abs(q["int8"]["precision@10 mean"] - q["fp32"]["precision@10 mean"]) <= 0.1
    images, labels = datasets.load("test")
    s = Server(Config(data=str(tmp_path / "data"), dim=256, port=0), encoders=enc)
    try:
        with Client(s.target) as c:
            def png(a):
                b = io.BytesIO()
                Image.fromarray(a).save(b, "PNG")
                return b.getvalue()
            c.upsert([dict(id=f"t{i}", title=datasets.title(int(labels[i])), category=datasets.CATEGORY[labels[i]],
                           image=png(images[i])) for i in range(40)])
            hits = c.search(image=png(images[7]), top_k=3)
            assert hits[0].product_id == "t7" and hits[0].score == pytest.approx(1.0, abs=1e-4)
            assert c.search(text="a pair of trousers", top_k=3)
    finally:
        s.stop()


def test_triton_serves_the_exported_models(exported):
    """The exported folders as Triton serves them (python backend over the same ONNX files)."""
    pytest.importorskip("tritonclient.grpc", reason="pip install tritonclient[grpc]")
    from skulens import encode as encoders
    from skulens.encode.triton import TritonServer, TritonUnavailable, find_install
    try:
        find_install()
    except TritonUnavailable as e:
        pytest.skip(f"no Triton server here: {e}")
    local = encoders.load(exported)
    pngs = [_png_of_article(i) for i in range(6)]
    titles = ["a pair of trousers", "Sneaker (Fashion-MNIST article)", "warm coat"]
    with TritonServer(exported, threads=1) as t:
        remote = encoders.load(exported, triton=t.url)
        assert isinstance(remote["text"].runner, encoders.TritonRunner)
        assert np.abs(remote["image"].embed(pngs) - local["image"].embed(pngs)).max() < 1e-5
        assert np.abs(remote["text"].embed(titles) - local["text"].embed(titles)).max() < 1e-5


def test_int8_export_agrees_with_fp32(quick, tmp_path):
    from skulens.encode import ImageEncoder
    _, run = quick
    repo = str(tmp_path / "repo8")
    _cli("export", "--run", run, "--model-repo", repo, "--int8")
    meta = json.load(open(os.path.join(repo, "image_encoder", "skulens.json")))
    m = meta["quantization"]["measured"]
    assert m["int8"]["cosine vs fp32 (500 catalogue pictures)"]["mean"] > 0.99
    assert m["int8"]["MiB"] < 0.5 * m["fp32"]["MiB"]
    assert abs(m["int8"]["category R@1"] - m["fp32"]["category R@1"]) < 0.05
    enc = ImageEncoder(os.path.join(repo, "image_encoder"))
    v = enc.embed([_png_of_article()])
    assert v.shape == (1, 256) and abs(float(np.linalg.norm(v)) - 1) < 1e-3


def _png_of_article(i: int = 0) -> bytes:
    from PIL import Image
    buf = io.BytesIO()
    Image.fromarray(datasets.load("test")[0][i]).save(buf, "PNG")
    return buf.getvalue()
