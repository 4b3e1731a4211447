"""Hostile input through the real gRPC server on loopback: decompression bombs and degenerate
images refused from the header with the right code, formats outside the allow-list refused,
bytes that are not a message answered INVALID_ARGUMENT, idle streams unable to starve unary
calls, UpsertStream saying what it committed, no heap addresses in errors, private data files,
and SIGTERM stopping the server after broken streams."""

import io
import os
import resource
import signal
import stat
import struct
import subprocess
import sys
import threading
import time
import zlib

import grpc
import numpy as np
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from PIL import Image

import onnx_models
from skulens import encode
from skulens.client import Client
from skulens.server import Config, Server
from skulens.v1 import skulens_pb2 as pb

HERE = os.path.dirname(__file__)


def png_header(w: int, h: int) -> bytes:
    """A PNG that declares w x h pixels in a few dozen bytes (the header is all Pillow reads on open)."""
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 0, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b""))


def image(fmt: str, size=(32, 32)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, (120, 30, 200)).save(buf, fmt)
    return buf.getvalue()


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    repo = tmp_path_factory.mktemp("repo")
    onnx_models.tiny_image_encoder(str(repo))
    encs = encode.load(str(repo))
    s = Server(Config(data=str(tmp_path_factory.mktemp("data") / "c"), dim=encs["image"].dim, port=0),
               encoders=encs)
    with Client(s.target) as c:
        c.upsert([dict(id="canary", title="canary", image=image("PNG"))])
    yield s
    s.stop()


@pytest.fixture
def client(server):
    with Client(server.target, timeout=20) as c:
        yield c


def code_of(fn):
    with pytest.raises(grpc.RpcError) as e:
        fn()
    return e.value.code(), e.value.details()


BOMBS = [png_header(100_000, 100_000), png_header(16_384, 16_384), png_header(40_000, 1_100)]


@pytest.mark.parametrize("data", BOMBS)
def test_decompression_bombs_are_refused_from_the_header(client, data):
    for call in (lambda: client.search(image=data), lambda: client.embed(image=data),
                 lambda: client.upsert([dict(id="bomb", image=data)])):
        code, msg = code_of(call)
        assert code == grpc.StatusCode.RESOURCE_EXHAUSTED and "pixel" in msg
    code, msg = code_of(lambda: list(client.search_stream([dict(image=data)])))
    assert code == grpc.StatusCode.RESOURCE_EXHAUSTED and "frame 0" in msg


def test_a_batch_with_one_bomb_names_it_and_stores_nothing(client):
    good = [dict(id=f"ok{i}", image=image("PNG", (20 + i, 20))) for i in range(29)]
    code, msg = code_of(lambda: client.upsert(good + [dict(id="the-bomb", image=BOMBS[0])]))
    assert code == grpc.StatusCode.RESOURCE_EXHAUSTED and "'the-bomb'" in msg
    assert code_of(lambda: client.get("ok3"))[0] == grpc.StatusCode.NOT_FOUND


@pytest.mark.parametrize("w,h", [(1, 34_000_000), (1, 20_000), (20_000, 1), (3000, 100)])
def test_degenerate_shapes_are_refused_without_taking_memory(client, w, h):
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    code, msg = code_of(lambda: client.search(image=png_header(w, h)))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "longer than wide" in msg
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before < 50_000  # KiB: no allocation


@pytest.mark.parametrize("fmt", ["GIF", "TIFF", "BMP", "PPM", "ICO", "TGA", "PCX", "SGI"])
def test_formats_outside_the_allow_list_are_refused(client, fmt):
    code, msg = code_of(lambda: client.search(image=image(fmt)))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "not a JPEG, PNG, WEBP image" in msg


def test_eps_never_reaches_ghostscript(client):
    eps = b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\nshowpage\n%%EOF\n"
    code, msg = code_of(lambda: client.search(image=eps))
    assert code == grpc.StatusCode.INVALID_ARGUMENT


def test_the_allowed_formats_are_configurable(tmp_path):
    repo = tmp_path / "repo"
    onnx_models.tiny_image_encoder(str(repo))
    encs = encode.load(str(repo))
    s = Server(Config(data=str(tmp_path / "c"), dim=encs["image"].dim, port=0, image_formats="png,gif"),
               encoders=encs)
    try:
        with Client(s.target) as c:
            assert len(c.embed(image=image("GIF"))) == encs["image"].dim
            code, msg = code_of(lambda: c.embed(image=image("JPEG")))
            assert code == grpc.StatusCode.INVALID_ARGUMENT and "not a PNG, GIF image" in msg
    finally:
        s.stop()
    with pytest.raises(ValueError, match="image formats"):
        Server(Config(data=str(tmp_path / "d"), dim=4, port=0, image_formats="png,nonsense"))


def test_errors_carry_no_heap_addresses(client):
    for data in (b"not an image at all", image("PNG")[:40], b"\xff\xd8\xff\xe0 broken jpeg"):
        code, msg = code_of(lambda: client.search(image=data))
        assert code == grpc.StatusCode.INVALID_ARGUMENT and " at 0x" not in msg and "object" not in msg, msg


@pytest.mark.parametrize("raw", [b"\xff" * 16, b"\x12\x05\x0a\x03abc" + b"\x80" * 5, bytes(range(200))])
def test_bytes_that_are_not_a_message_are_invalid_argument(server, raw):
    with grpc.insecure_channel(server.target) as ch:
        call = ch.unary_unary("/skulens.v1.ProductSearch/Search")   # no serializer: raw bytes
        with pytest.raises(grpc.RpcError) as e:
            call(raw, timeout=10)
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "SearchRequest" in e.value.details()


def test_a_stream_that_turns_to_garbage_answers_its_good_frames_first(server):
    good = pb.SearchRequest(query=pb.Query(product_id="canary"), top_k=1).SerializeToString()
    with grpc.insecure_channel(server.target) as ch:
        call = ch.stream_stream("/skulens.v1.ProductSearch/SearchStream")
        got = []
        with pytest.raises(grpc.RpcError) as e:
            for r in call(iter([good, good, b"\xff" * 16]), timeout=10):
                got.append(pb.StreamHits.FromString(r))
    assert [g.frame for g in got] == [0, 1]
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "SearchRequest" in e.value.details()


def test_upsert_stream_says_what_it_committed(client):
    batches = [[dict(id="s1", vector=np.ones(client.stats()["dim"]))],
               [dict(id="s2", vector=np.arange(client.stats()["dim"]) + 1.0)],
               [dict(id="s3", image=b"not an image")], [dict(id="s4", vector=np.ones(client.stats()["dim"]))]]
    with pytest.raises(grpc.RpcError) as e:
        client.upsert_stream(batches)
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "after 2 committed batch(es) (2 products" in e.value.details()
    md = dict(e.value.trailing_metadata())
    assert md["skulens-committed-batches"] == "2" and int(md["skulens-committed-seq"]) > 0
    assert client.get("s1").id == "s1" and client.get("s2").id == "s2"
    for gone in ("s3", "s4"):
        assert code_of(lambda: client.get(gone))[0] == grpc.StatusCode.NOT_FOUND


def test_idle_streams_cannot_starve_unary_calls(server):
    """64 scanners holding SearchStream open and silent: Search and health still answer in 50 ms."""
    release = threading.Event()

    def silent():
        release.wait(30)
        return
        yield  # noqa: unreachable - makes this a generator

    with grpc.insecure_channel(server.target) as ch:
        stream = ch.stream_stream("/skulens.v1.ProductSearch/SearchStream")
        calls = [stream(silent(), timeout=30) for _ in range(Config.max_streams)]
        time.sleep(1.0)  # every stream is admitted and holds its thread
        try:
            over = stream(iter([pb.SearchRequest().SerializeToString()]), timeout=10)
            with pytest.raises(grpc.RpcError) as e:
                list(over)
            assert e.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            with Client(server.target, timeout=5) as c:
                health = health_pb2_grpc.HealthStub(c.channel)
                c.search(product_id="canary", top_k=1)  # connection warm
                for _ in range(5):
                    t0 = time.perf_counter()
                    assert len(c.search(product_id="canary", top_k=1)) <= 1
                    assert health.Check(health_pb2.HealthCheckRequest(), timeout=5).status == \
                        health_pb2.HealthCheckResponse.SERVING
                    assert time.perf_counter() - t0 < 0.05
        finally:
            release.set()
            for call in calls:
                call.cancel()


def test_data_files_are_private(server):
    data = server.config.data
    assert stat.S_IMODE(os.stat(data).st_mode) == 0o700
    for name in ("catalog.db", "catalog.db-wal", "LOCK"):
        p = os.path.join(data, name)
        if os.path.exists(p):
            assert stat.S_IMODE(os.stat(p).st_mode) & 0o077 == 0, name


def test_sigterm_stops_the_server_after_broken_streams(tmp_path):
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    proc = subprocess.Popen([sys.executable, "-m", "skulens.cli", "serve", "--data", str(tmp_path / "c"),
                             "--port", "0", "--dim", "4"], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline()
        target = line.split(" on ")[1].split(" ")[0]
        with grpc.insecure_channel(target) as ch:
            stream = ch.stream_stream("/skulens.v1.ProductSearch/SearchStream")
            for _ in range(3):
                with pytest.raises(grpc.RpcError):
                    list(stream(iter([b"\xff" * 16, b"\x80\x80"]), timeout=5))
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=Config.grace_s + 15) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
    from skulens.catalog import Catalog
    with Catalog.open(str(tmp_path / "c"), 4) as c:  # closed cleanly: the folder lock was released
        assert len(c) == 0


def test_stored_thumbnails_carry_no_metadata(client):
    """A phone photo with GPS coordinates, an ICC profile and XMP: the kept thumbnail has none of them."""
    im = Image.new("RGB", (200, 150), (10, 200, 30))
    exif = Image.Exif()
    exif[0x010F] = "PhoneMaker"                                   # Make
    exif.get_ifd(0x8825)[2] = (52.0, 31.0, 12.0)                  # GPSLatitude
    exif.get_ifd(0x8825)[1] = "N"
    buf = io.BytesIO()
    im.save(buf, "JPEG", exif=exif, icc_profile=b"\0" * 128 + b"acspfake-icc", xmp=b"<x:xmpmeta>secret</x:xmpmeta>")
    data = buf.getvalue()
    assert b"PhoneMaker" in data and b"secret" in data
    client.upsert([dict(id="gps-photo", image=data)])
    thumb = client.thumbnail("gps-photo")
    t = Image.open(io.BytesIO(thumb))
    assert not t.getexif() and "icc_profile" not in t.info and "xmp" not in t.info
    assert b"PhoneMaker" not in thumb and b"secret" not in thumb and b"acspfake" not in thumb
