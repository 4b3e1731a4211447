"""Hypothesis-driven requests against the real server on loopback, across every RPC: whatever
arrives, the answer is never INTERNAL or UNKNOWN, the server stays up, a canary product is
unchanged and memory stays bounded. 300 cases in CI; SKULENS_FUZZ_EXAMPLES=5000 for more."""

import gc
import os
import resource
import struct
import zlib

import grpc
import numpy as np
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import onnx_models
from skulens import encode
from skulens.server import Config, Server
from skulens.v1 import skulens_pb2 as pb

EXAMPLES = int(os.environ.get("SKULENS_FUZZ_EXAMPLES", "300"))
BAD = {grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN}


def _png(w, h):
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(b"\0" * 32)) + chunk(b"IEND", b""))


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    repo = tmp_path_factory.mktemp("repo")
    onnx_models.tiny_image_encoder(str(repo))
    onnx_models.tiny_text_encoder(str(repo), ["red", "shoe", "bag"])
    encs = encode.load(str(repo))
    s = Server(Config(data=str(tmp_path_factory.mktemp("d") / "c"), dim=encs["image"].dim, port=0), encoders=encs)
    dim = encs["image"].dim
    canary = np.linspace(1, 2, dim).astype(np.float32)
    with grpc.insecure_channel(s.target) as ch:
        ch.unary_unary("/skulens.v1.ProductSearch/Upsert", request_serializer=pb.UpsertRequest.SerializeToString,
                       response_deserializer=pb.UpsertResponse.FromString)(
            pb.UpsertRequest(products=[pb.Product(id="canary", title="canary", vector=canary.tolist())]))
    yield s, dim, canary / np.linalg.norm(canary)
    s.stop()


floats = st.one_of(st.floats(allow_nan=True, allow_infinity=True, width=32), st.just(0.0), st.just(1e38))
vectors = st.lists(floats, min_size=0, max_size=40)
texts = st.text(max_size=60) | st.builds(lambda n: "x" * n, st.integers(4000, 5000))
ids = st.text(max_size=20) | st.builds(lambda n: "i" * n, st.integers(250, 300)) | st.just("canary")
images = st.one_of(st.binary(max_size=200), st.builds(_png, st.integers(0, 200_000), st.integers(0, 200_000)),
                   st.sampled_from([b"GIF89a\x01\x00\x01\x00", b"%!PS-Adobe-3.0 EPSF-3.0\n", b"\xff\xd8\xff\xe0"]))
filters = st.one_of(st.none(), texts, st.builds(lambda k, v: pb.Filter(all=[pb.Clause(any=[pb.Term(key=k, value=v)])]),
                                                 texts, texts))


@st.composite
def query(draw):
    kind = draw(st.sampled_from(["image", "text", "vector", "raw_vector", "product_id", "none"]))
    if kind == "image":
        return pb.Query(image=draw(images))
    if kind == "text":
        return pb.Query(text=draw(texts))
    if kind == "vector":
        return pb.Query(vector=pb.Vector(values=draw(vectors)))
    if kind == "raw_vector":  # Vector.le_float32: any bytes, sometimes beside values too
        return pb.Query(vector=pb.Vector(le_float32=draw(st.binary(max_size=200)),
                                         values=draw(st.one_of(st.just([]), vectors))))
    if kind == "product_id":
        return pb.Query(product_id=draw(ids))
    return pb.Query()


@st.composite
def search(draw):
    f = draw(filters)
    r = pb.SearchRequest(query=draw(query()), top_k=draw(st.integers(-5, 20_000)), mode=draw(st.integers(0, 5)),
                         ef=draw(st.integers(-5, 20_000)), include_metadata=draw(st.booleans()))
    if isinstance(f, str):
        r.filter.expression = f
    elif f is not None:
        r.filter.CopyFrom(f)
    return r


@st.composite
def product(draw):
    p = pb.Product(id=draw(ids), sku=draw(texts), title=draw(texts), category=draw(texts),
                   attributes=draw(st.dictionaries(texts, texts, max_size=3)))
    if draw(st.booleans()):
        p.vector.extend(draw(vectors))
    else:
        p.image = draw(images)
    return p


calls = st.one_of(
    st.tuples(st.just("Search"), search()),
    st.tuples(st.just("SearchStream"), st.lists(search(), max_size=3)),
    st.tuples(st.just("Upsert"), st.builds(lambda ps: pb.UpsertRequest(products=ps), st.lists(product(), max_size=3))),
    st.tuples(st.just("UpsertStream"), st.lists(st.builds(lambda ps: pb.UpsertRequest(products=ps),
                                                          st.lists(product(), max_size=2)), max_size=3)),
    st.tuples(st.just("Delete"), st.builds(lambda i: pb.DeleteRequest(ids=i), st.lists(ids.filter(lambda x: x != "canary"),
                                                                                       max_size=3))),
    st.tuples(st.just("GetProduct"), st.builds(lambda i, v, t: pb.GetProductRequest(id=i, include_vector=v,
                                                                                  include_thumbnail=t),
                                               ids, st.booleans(), st.booleans())),
    st.tuples(st.just("Embed"), st.one_of(st.builds(lambda b: pb.EmbedRequest(image=b), images),
                                          st.builds(lambda t: pb.EmbedRequest(text=t), texts))),
    st.tuples(st.just("raw"), st.binary(max_size=64)),
)


def _rss_kib() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") // 1024


def test_no_request_breaks_the_server(server):
    s, dim, canary = server
    gc.collect()
    start, resident = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, _rss_kib()
    ch = grpc.insecure_channel(s.target)
    codes = {}

    def rpc(name, streaming_in, streaming_out):
        path = f"/skulens.v1.ProductSearch/{name}"
        make = {(False, False): ch.unary_unary, (False, True): ch.unary_stream,
                (True, False): ch.stream_unary, (True, True): ch.stream_stream}[(streaming_in, streaming_out)]
        return make(path, request_serializer=lambda m: m if isinstance(m, bytes) else m.SerializeToString())

    shapes = {"Search": (False, False), "SearchStream": (True, True), "Upsert": (False, False),
              "UpsertStream": (True, False), "Delete": (False, False), "GetProduct": (False, False),
              "Embed": (False, False)}

    @settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
    @given(calls)
    def one(call):
        name, req = call
        try:
            if name == "raw":
                rpc("Search", False, False)(req, timeout=10)
            elif name == "SearchStream":
                list(rpc(name, True, True)(iter(req), timeout=10))
            elif name == "UpsertStream":
                rpc(name, True, False)(iter(req), timeout=10)
            else:
                rpc(name, *shapes[name])(req, timeout=10)
            code = grpc.StatusCode.OK
        except grpc.RpcError as e:
            code = e.code()
            assert code not in BAD, (name, req, e.details())
        codes[code.name] = codes.get(code.name, 0) + 1

    try:
        one()
        health = health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(), timeout=5)
        assert health.status == health_pb2.HealthCheckResponse.SERVING
        got = pb.Product.FromString(rpc("GetProduct", False, False)(pb.GetProductRequest(id="canary",
                                                                                      include_vector=True)))
        # The canary may be overwritten only by a request that named it; its vector must be intact otherwise.
        if got.title == "canary":
            np.testing.assert_allclose(np.asarray(got.vector) / np.linalg.norm(got.vector), canary, atol=1e-6)
    finally:
        ch.close()
    # Bounded memory: what the process keeps after 300 hostile calls, and its peak while handling them
    # (a peak also holds transient decodes of images up to MAX_PIXELS, and rises with whatever the
    # suite's earlier tests left in the allocator, so its bound is looser).
    gc.collect()
    kept = _rss_kib() - resident
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - start
    print(f"fuzz memory: kept {kept} KiB, peak growth {peak} KiB")
    assert kept < 150_000 and peak < 500_000, (kept, peak, codes)   # KiB
    print("fuzz outcomes:", codes)
    assert len(codes) >= 3, codes   # the cases reached several outcomes, not one path
