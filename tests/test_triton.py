"""NVIDIA Triton as the encoders' runtime: a real tritonserver (PyPI nvidia-pytriton, in its own
virtualenv: `make triton`) started on loopback over a model repository of real ONNX models; the
encoders' vectors through Triton equal ONNX Runtime's in process, on real photos, under
concurrent requests (Triton's dynamic batcher) and through the skulens gRPC service."""

import io
import os
import subprocess
from concurrent.futures import ThreadPoolExecutor

import grpc
import numpy as np
import pytest
from PIL import Image

import onnx_models
from skulens import encode as encoders
from skulens.client import Client
from skulens.server import Config, Server
from skulens.encode.triton import TritonServer, TritonUnavailable, find_install, prepare_repository

skdata = pytest.importorskip("skimage.data", reason="scikit-image provides the real photos")
pytest.importorskip("tritonclient.grpc", reason="pip install tritonclient[grpc]")
try:
    find_install()
except TritonUnavailable as e:
    pytest.skip(f"no Triton server here: {e}", allow_module_level=True)

PHOTOS = ("chelsea", "coffee", "astronaut", "rocket", "camera", "coins")
WORDS = ["red", "blue", "leather", "canvas", "boot", "sneaker", "bag", "dress", "coat", "wool"]


def png(name: str) -> bytes:
    b = io.BytesIO()
    Image.fromarray(getattr(skdata, name)()).convert("RGB").save(b, "PNG")
    return b.getvalue()


@pytest.fixture(scope="module")
def repo(tmp_path_factory):
    r = str(tmp_path_factory.mktemp("model_repo"))
    onnx_models.tiny_image_encoder(r)
    onnx_models.tiny_text_encoder(r, WORDS)
    return r


@pytest.fixture(scope="module")
def triton(repo):
    with TritonServer(repo, threads=1) as t:
        yield t
    assert t.proc.returncode is not None     # stopped with the fixture, not left behind


def test_repository_for_the_python_backend(repo, tmp_path):
    names = prepare_repository(repo, str(tmp_path))
    assert names == ["image_encoder", "preprocess", "image_pipeline", "text_encoder", "tokenize", "text_pipeline"]
    assert 'platform: "ensemble"' in (tmp_path / "image_pipeline" / "config.pbtxt").read_text()
    config = (tmp_path / "image_encoder" / "config.pbtxt").read_text()
    assert 'backend: "python"' in config and "onnxruntime" not in config
    assert (tmp_path / "image_encoder" / "1" / "model.py").exists()
    assert os.path.realpath(tmp_path / "image_encoder" / "1" / "model.onnx") == \
        os.path.realpath(os.path.join(repo, "image_encoder", "1", "model.onnx"))
    with pytest.raises(FileNotFoundError, match="make models"):
        prepare_repository(str(tmp_path / "empty"), str(tmp_path / "out"))


def test_triton_and_onnxruntime_give_the_same_vectors(repo, triton):
    local, remote = encoders.load(repo), encoders.load(repo, triton=triton.url)
    assert isinstance(remote["image"].runner, encoders.TritonRunner)
    photos = [png(n) for n in PHOTOS]
    a, b = local["image"].embed(photos), remote["image"].embed(photos)
    assert a.shape == b.shape == (len(PHOTOS), local["image"].dim)
    assert np.abs(a - b).max() < 1e-6
    titles = ["red leather boot", "blue canvas sneaker", "wool coat", "a bag"]
    assert np.abs(local["text"].embed(titles) - remote["text"].embed(titles)).max() < 1e-6


def test_the_ensemble_takes_raw_image_bytes(repo, triton):
    """A client sends JPEG/PNG bytes to Triton itself (image_pipeline: preprocess -> image_encoder)
    and gets the vector skulens computes in process from the same bytes."""
    import tritonclient.grpc as tc
    local = encoders.load(repo)["image"]
    client = tc.InferenceServerClient(triton.url)
    assert client.is_model_ready("image_pipeline") and client.is_model_ready("preprocess")
    jpeg = io.BytesIO()
    Image.fromarray(skdata.coffee()).save(jpeg, "JPEG", quality=90)
    blobs = [png(n) for n in PHOTOS] + [jpeg.getvalue()]
    x = tc.InferInput("image", [len(blobs), 1], "BYTES")
    x.set_data_from_numpy(np.array([[b] for b in blobs], dtype=object))
    got = client.infer("image_pipeline", [x]).as_numpy("embedding")
    assert np.abs(got - local.embed(blobs)).max() < 1e-5
    # and text: titles -> tokenize -> text_encoder, as skulens tokenises them
    titles = ["red leather boot", "blue canvas sneaker", "a wool coat"]
    t = tc.InferInput("text", [len(titles), 1], "BYTES")
    t.set_data_from_numpy(np.array([[s.encode()] for s in titles], dtype=object))
    got = client.infer("text_pipeline", [t]).as_numpy("embedding")
    assert np.abs(got - encoders.load(repo)["text"].embed(titles)).max() < 1e-5
    assert encoders.load(repo, triton=triton.url)["text"].remote is not None


def test_skulens_sends_bytes_to_the_ensemble_and_refuses_bad_ones_first(repo, triton):
    from skulens.errors import InvalidArgument
    remote = encoders.load(repo, triton=triton.url)["image"]
    assert remote.remote is not None
    t = __import__("skulens.v1.skulens_pb2", fromlist=["Timings"]).Timings()
    v = remote.embed_request(png("rocket"), t)
    assert t.decode_us == 0 and t.encode_us > 0          # decoded beside the model, not here
    assert np.abs(v - encoders.load(repo)["image"].embed([png("rocket")])[0]).max() < 1e-5
    with pytest.raises(InvalidArgument):                 # not an image: refused here, never sent
        remote.embed_request(b"not an image at all")
    whole = png("astronaut")
    with pytest.raises(InvalidArgument, match="decode"):  # a valid header, truncated pixels: Triton says so
        remote.embed_request(whole[: len(whole) // 3])


def test_a_batch_over_the_models_max_batch_size_goes_in_pieces(repo, triton):
    """An upsert of 200 pictures is one encoder batch; Triton takes at most max_batch_size (64)."""
    remote = encoders.load(repo, triton=triton.url)["image"]
    assert remote.runner.max_batch == 64
    photos = [png(n) for n in PHOTOS] * 12          # 72 pictures
    got = remote.embed(photos)
    assert got.shape == (72, remote.dim)
    assert np.abs(got - encoders.load(repo)["image"].embed(photos)).max() < 1e-6


def test_concurrent_requests_are_batched_and_each_gets_its_own_answer(repo, triton):
    enc = encoders.load(repo, triton=triton.url)["image"]
    want = encoders.load(repo)["image"]
    xs = [want.preprocess([Image.open(io.BytesIO(png(n))).convert("RGB")]) for n in PHOTOS]
    with ThreadPoolExecutor(8) as pool:   # requests meet in Triton's dynamic batcher
        got = list(pool.map(enc.encode, xs * 8))
    for i, g in enumerate(got):
        assert np.abs(g - want.encode(xs[i % len(xs)])).max() < 1e-6


def test_image_and_text_search_through_the_service_on_triton(tmp_path, repo, triton):
    encs = encoders.load(repo, triton=triton.url)
    s = Server(Config(data=str(tmp_path / "d"), dim=encs["image"].dim, port=0), encoders=encs)
    try:
        with Client(s.target) as c:
            titles = dict(zip(PHOTOS, ["red leather boot", "blue canvas sneaker", "wool coat", "canvas bag",
                                       "red dress", "blue bag"]))
            c.upsert([dict(id=n, title=titles[n], image=png(n)) for n in PHOTOS])
            for n in PHOTOS:
                b = io.BytesIO()
                Image.open(io.BytesIO(png(n))).save(b, "JPEG", quality=90)
                assert c.search(image=b.getvalue(), top_k=1)[0].product_id == n
            assert c.search(text="leather boot", top_k=1)[0].product_id == "chelsea"
    finally:
        s.stop()


def test_a_triton_that_goes_away_makes_image_calls_unavailable_and_loses_nothing(repo, tmp_path):
    with TritonServer(repo, threads=1) as t:
        encs = encoders.load(repo, triton=t.url)
        s = Server(Config(data=str(tmp_path / "d"), dim=encs["image"].dim, port=0), encoders=encs)
        try:
            with Client(s.target) as c:
                c.upsert([dict(id="coffee", image=png("coffee"))])
                t.stop()
                for call in (lambda: c.search(image=png("chelsea"), top_k=1),
                             lambda: c.upsert([dict(id="cat", image=png("chelsea"))])):
                    with pytest.raises(grpc.RpcError) as e:
                        call()
                    assert e.value.code() == grpc.StatusCode.UNAVAILABLE, e.value.details()
                    assert "Triton" in e.value.details()
                # The refused upsert left nothing; what was stored still answers.
                assert c.get("coffee", include_vector=True).id == "coffee"
                with pytest.raises(grpc.RpcError) as e:
                    c.get("cat")
                assert e.value.code() == grpc.StatusCode.NOT_FOUND
                v = list(c.get("coffee", include_vector=True).vector)
                assert c.search(vector=v, top_k=1)[0].product_id == "coffee"
        finally:
            s.stop()


def test_two_tritons_round_robin_and_one_stopped_mid_run_fails_no_query(repo):
    """Encoders on two Triton replicas: calls alternate between them; one stopped while queries
    run is ejected and its calls go to the other, so no query fails."""
    want = encoders.load(repo)["image"]
    photos = [png(n) for n in PHOTOS]
    with TritonServer(repo, threads=1) as a, TritonServer(repo, threads=1) as b:
        enc = encoders.load(repo, triton=f"{a.url},{b.url}")["image"]
        assert len(enc.remote.clients) == 2
        import time
        errors, stamps, stopped = [], [], [float("inf")]
        wants = want.embed(photos)

        def load():
            k = 0
            while time.monotonic() < stopped[0] + 1.0:   # queries go on for a second after the stop
                try:
                    v = enc.embed([photos[k % len(photos)]])
                    assert np.abs(v - wants[k % len(photos)]).max() < 1e-5
                    stamps.append(time.monotonic())
                except Exception as e:  # noqa: BLE001 - every failure is the test's business
                    errors.append(e)
                k += 1
        with ThreadPoolExecutor(2) as pool:
            jobs = [pool.submit(load) for _ in range(2)]
            time.sleep(0.5)
            a.stop()
            stopped[0] = time.monotonic()
            for j in jobs:
                j.result()
        assert not errors, errors[:3]
        assert sum(t > stopped[0] for t in stamps) >= 20 and sum(t < stopped[0] for t in stamps) >= 20


def test_an_unreachable_triton_is_a_clear_error(repo):
    with pytest.raises(ConnectionError, match="not reachable"):
        encoders.load(repo, triton="127.0.0.1:1")


@pytest.mark.parametrize("how", [["--triton", "127.0.0.1:1"], ["--triton", "start", "NO_VENV"]])
def test_serve_without_a_usable_triton_says_why_in_one_line(repo, tmp_path, how):
    import sys
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    if how[-1] == "NO_VENV":
        how, env["SKULENS_TRITON_VENV"] = how[:-1], str(tmp_path / "none")
    r = subprocess.run([sys.executable, "-m", "skulens.cli", "serve", "--data", str(tmp_path / "d"), "--port", "0",
                        "--model-repo", repo, *how], env=env, capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
    assert ("not reachable" if how[-1] != "start" else "make triton") in r.stderr


def test_serve_starts_and_stops_its_own_triton(repo, tmp_path):
    """`skulens serve --triton start`: Triton comes up with the server and goes with it."""
    import signal
    import sys
    import time
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    p = subprocess.Popen([sys.executable, "-m", "skulens.cli", "serve", "--data", str(tmp_path / "d"), "--port", "0",
                          "--model-repo", repo, "--triton", "start"], env=env, stdout=subprocess.PIPE,
                         stderr=subprocess.STDOUT, text=True)
    lines = []
    deadline = time.time() + 120
    while time.time() < deadline and not any("skulens serving" in x for x in lines):
        line = p.stdout.readline()
        if not line:
            break
        lines.append(line)
    assert any("Triton serving" in x for x in lines) and "on Triton at 127.0.0.1:" in lines[-1], lines
    target = lines[-1].split(" on ")[1].split(" ")[0]
    with Client(target) as c:
        c.upsert([dict(id="coffee", image=png("coffee"))])
        assert c.search(image=png("coffee"), top_k=1)[0].product_id == "coffee"
    triton_url = next(x for x in lines if "Triton serving" in x).split(" on ")[-1].strip()
    p.send_signal(signal.SIGTERM)
    assert p.wait(60) == 0
    import socket
    host, port = triton_url.rsplit(":", 1)
    with pytest.raises(OSError):       # tritonserver went with skulens
        socket.create_connection((host, int(port)), timeout=2).close()
