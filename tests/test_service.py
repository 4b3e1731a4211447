"""The gRPC service over real loopback: every RPC, every error code, health and
reflection through grpcio's own clients, and a restart that keeps the data."""

import json

import grpc
import numpy as np
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import ProtoReflectionDescriptorDatabase

from skulens.client import AsyncClient, Client
from skulens.server import Config, Server
from skulens.v1 import skulens_pb2 as pb
from synthetic import clustered

D = 16


@pytest.fixture(params=["sync", "aio"])
def server(tmp_path, request):
    """Every test of the service runs on both server kinds (server.py's `server` setting)."""
    s = Server(Config(data=str(tmp_path / "data"), dim=D, port=0, max_message_mb=1, grace_s=2, server=request.param))
    yield s
    s.stop()


@pytest.fixture
def client(server):
    with Client(server.target) as c:
        yield c


def fill(client, n=300):
    x = clustered(n, D, seed=1)
    client.upsert([dict(id=f"p{i}", sku=f"S{i}", title=f"thing {i}", category=f"c{i % 3}",
                        attributes={"color": ("red", "blue")[i % 2]}, vector=x[i]) for i in range(n)])
    return x


def code_of(fn):
    with pytest.raises(grpc.RpcError) as e:
        fn()
    return e.value.code(), e.value.details()


def test_health_and_reflection(server):
    with grpc.insecure_channel(server.target) as ch:
        h = health_pb2_grpc.HealthStub(ch)
        for name in ("", "skulens.v1.ProductSearch"):
            assert h.Check(health_pb2.HealthCheckRequest(service=name)).status == health_pb2.HealthCheckResponse.SERVING
        db = ProtoReflectionDescriptorDatabase(ch)
        assert "skulens.v1.ProductSearch" in db.get_services()
        svc = db.FindFileContainingSymbol("skulens.v1.ProductSearch").service[0]
        assert {m.name for m in svc.method} >= {"Search", "SearchStream", "Upsert", "UpsertStream", "Delete",
                                               "GetProduct", "Embed", "Stats"}


def test_search_upsert_get_delete_stats(client):
    x = fill(client)
    hits = client.search(vector=x[7], top_k=5)
    assert hits[0].product_id == "p7" and hits[0].score == pytest.approx(1.0, abs=1e-5) and len(hits) == 5
    assert hits[0].title == ""  # metadata only when asked
    full = client.search_full(vector=x[7], top_k=3, include_metadata=True, mode="exact")
    assert (full.hits[0].sku, full.hits[0].title, full.hits[0].category) == ("S7", "thing 7", "c1")
    assert full.timings.total_us >= full.timings.search_us >= 0
    for mode in ("exact", "ann", "auto"):
        assert client.search(vector=x[9], top_k=1, mode=mode, ef=32)[0].product_id == "p9"
    for f in ("category=c1 AND color=blue", {"category": "c1", "color": "blue"},
              [[("category", "c1")], [("color", "blue")]]):
        hs = client.search(vector=x[0], top_k=20, filters=f)
        assert len(hs) == 20 and all(int(h.product_id[1:]) % 6 == 1 for h in hs)
    like = client.search(product_id="p7", top_k=4)
    assert len(like) == 4 and all(h.product_id != "p7" for h in like)
    p = client.get("p7", include_vector=True)
    assert (p.sku, p.category, dict(p.attributes)) == ("S7", "c1", {"color": "blue"})
    np.testing.assert_allclose(p.vector, x[7], atol=1e-6)
    assert p.created > 0 and len(client.get("p8").vector) == 0
    assert client.delete(["p7", "p8", "nope"]) == 2
    assert client.search(vector=x[7], top_k=1)[0].product_id != "p7"
    st = client.stats()
    assert st["products"] == 298 and st["dim"] == D and st["searches"]["auto_exact"] > 0


def test_upsert_stream(client):
    x = clustered(50, D, seed=2)
    r = client.upsert_stream([[dict(id=f"s{i}", vector=x[i]) for i in range(a, a + 10)] for a in range(0, 50, 10)])
    assert r.upserted == 50 and r.seq > 0
    assert client.search(vector=x[33], top_k=1)[0].product_id == "s33"


def _raw_search(client, **vector):
    from skulens.v1 import skulens_pb2 as pb
    return client.stub.Search(pb.SearchRequest(query=pb.Query(vector=pb.Vector(**vector)), top_k=3))


def test_a_vector_as_raw_bytes_or_as_numbers_finds_the_same(client):
    """Vector.le_float32 (what the client sends) and the repeated float give the same answer."""
    x = fill(client, 100)
    from skulens.v1 import skulens_pb2 as pb
    for v in x[:5]:
        as_bytes = _raw_search(client, le_float32=v.astype("<f4").tobytes())
        as_numbers = _raw_search(client, values=v.tolist())
        assert [(h.product_id, h.score) for h in as_bytes.hits] == [(h.product_id, h.score) for h in as_numbers.hits]
        assert as_bytes.hits[0].product_id == client.search(vector=v.tolist(), top_k=1)[0].product_id
    sent = pb.SearchRequest.FromString(__import__("skulens.client", fromlist=["x"]).search_request(
        vector=[0.5, -1.25], top_k=1).SerializeToString())
    assert sent.query.vector.le_float32 == np.array([0.5, -1.25], "<f4").tobytes() and not sent.query.vector.values


@pytest.mark.parametrize("call,code,words", [
    (lambda c: c.search(vector=[1.0] * (D + 1)), grpc.StatusCode.INVALID_ARGUMENT, "shape"),
    (lambda c: c.search(vector=[float("nan")] * D), grpc.StatusCode.INVALID_ARGUMENT, "NaN"),
    (lambda c: c.search(vector=[0.0] * D), grpc.StatusCode.INVALID_ARGUMENT, "zero"),
    (lambda c: c.search(vector=[1.0] * D, top_k=1001), grpc.StatusCode.INVALID_ARGUMENT, "top_k"),
    (lambda c: _raw_search(c, le_float32=b"\0" * (4 * D + 2)), grpc.StatusCode.INVALID_ARGUMENT, "whole number"),
    (lambda c: _raw_search(c, le_float32=np.ones(D, "<f4").tobytes(), values=[1.0] * D),
     grpc.StatusCode.INVALID_ARGUMENT, "not both"),
    (lambda c: _raw_search(c, le_float32=np.ones(D - 1, "<f4").tobytes()), grpc.StatusCode.INVALID_ARGUMENT, "shape"),
    (lambda c: _raw_search(c, le_float32=np.full(D, np.inf, "<f4").tobytes()), grpc.StatusCode.INVALID_ARGUMENT, "NaN"),
    (lambda c: _raw_search(c), grpc.StatusCode.INVALID_ARGUMENT, "empty"),
    (lambda c: c.search(vector=[1.0] * D, top_k=-1), grpc.StatusCode.INVALID_ARGUMENT, "top_k"),
    (lambda c: c.search(vector=[1.0] * D, filters="colour"), grpc.StatusCode.INVALID_ARGUMENT, "key=value"),
    (lambda c: c.search(vector=[1.0] * D, ef=-3), grpc.StatusCode.INVALID_ARGUMENT, "ef"),
    (lambda c: c.stub.Search(__import__("skulens.v1.skulens_pb2", fromlist=["x"]).SearchRequest()),
     grpc.StatusCode.INVALID_ARGUMENT, "empty query"),
    (lambda c: c.search(product_id="nope"), grpc.StatusCode.NOT_FOUND, "nope"),
    (lambda c: c.get("nope"), grpc.StatusCode.NOT_FOUND, "nope"),
    (lambda c: c.search(image=b"\x89PNG"), grpc.StatusCode.UNIMPLEMENTED, "image encoder"),
    (lambda c: c.search(text="red shoe"), grpc.StatusCode.UNIMPLEMENTED, "text encoder"),
    (lambda c: c.embed(text="red shoe"), grpc.StatusCode.UNIMPLEMENTED, "text encoder"),
    (lambda c: c.upsert([dict(id="x")]), grpc.StatusCode.INVALID_ARGUMENT, "vector or an image"),
    (lambda c: c.upsert([dict(id="", vector=[1.0] * D)]), grpc.StatusCode.INVALID_ARGUMENT, "non-empty"),
    (lambda c: c.upsert([dict(id="x", vector=[1.0] * 3)]), grpc.StatusCode.INVALID_ARGUMENT, "shape"),
    (lambda c: c.upsert([]), grpc.StatusCode.INVALID_ARGUMENT, "no products"),
    (lambda c: c.delete([]), grpc.StatusCode.INVALID_ARGUMENT, "no ids"),
    (lambda c: c.upsert([dict(id="big", vector=[1.0] * D, image=b"\0" * (2 << 20))]),
     grpc.StatusCode.RESOURCE_EXHAUSTED, ""),
])
def test_errors_have_the_right_code_and_change_nothing(client, call, code, words):
    fill(client, 30)
    before = client.stats()["seq"]
    got, details = code_of(lambda: call(client))
    assert got == code and words in details
    assert client.stats()["seq"] == before and client.stats()["products"] == 30
    assert client.search(vector=[1.0] * D, top_k=1)  # and the server is fine


def test_deadline_exceeded(server):
    import time

    def slow():
        time.sleep(0.6)  # the first batch arrives after the deadline
        yield [dict(id="late", vector=[1.0] * D)]
    with Client(server.target, timeout=0.2) as c:
        got, _ = code_of(lambda: c.upsert_stream(slow()))
    assert got == grpc.StatusCode.DEADLINE_EXCEEDED
    with Client(server.target) as c:
        time.sleep(0.5)
        assert c.stats()["products"] == 0


def test_async_client(server):
    import asyncio

    async def run():
        async with AsyncClient(server.target) as c:
            x = clustered(20, D, seed=3)
            await c.upsert([dict(id=f"a{i}", vector=x[i]) for i in range(20)])
            hits = await c.search(vector=x[4], top_k=2)
            assert hits[0].product_id == "a4"
            assert (await c.get("a4")).id == "a4"
            assert await c.delete(["a4"]) == 1
            assert (await c.stats())["products"] == 19
    asyncio.run(run())


def test_restart_keeps_the_data(tmp_path):
    cfg = Config(data=str(tmp_path / "data"), dim=D, port=0)
    s = Server(cfg)
    with Client(s.target) as c:
        x = fill(c, 100)
    s.stop()
    s = Server(cfg)
    try:
        with Client(s.target) as c:
            assert c.stats()["products"] == 100
            assert c.search(vector=x[42], top_k=1)[0].product_id == "p42"
    finally:
        s.stop()


def test_config_layers(tmp_path):
    toml = tmp_path / "s.toml"
    toml.write_text('[server]\nport = 7000\ndim = 64\nthreads = 4\n')
    cfg = Config.load(str(toml), env={"SKULENS_PORT": "7001", "SKULENS_EF": "80"}, port=7002, data=None)
    assert (cfg.port, cfg.dim, cfg.threads, cfg.ef) == (7002, 64, 4, 80)
    with pytest.raises(ValueError, match="unknown"):
        Config.load(None, env={}, colour="red")
    with pytest.raises(ValueError, match="bad configuration"):
        Config.load(None, env={"SKULENS_PORT": "many"})
    assert json.loads(json.dumps(cfg.__dict__))["dim"] == 64
    for bad, words in ((dict(server="tornado"), "sync' or 'aio"), (dict(cpus="99999"), "may use CPUs"),
                       (dict(cpus="one"), "CPU numbers")):
        with pytest.raises(ValueError, match=words):
            Server(Config(data=str(tmp_path / "never"), dim=4, port=0, **bad))
        assert not (tmp_path / "never").exists()  # refused before anything is made


def test_the_aio_server_runs_only_cheap_searches_on_its_event_loop():
    """A vector or product-id Search runs inline; anything to encode, an exact scan of a big
    catalogue, or bytes that did not parse go to the thread pool (aio.cheap)."""
    from skulens.aio import INLINE_EXACT_ROWS, cheap
    from skulens.security.wire import Unparseable
    from skulens.v1 import skulens_pb2 as pb
    vec = pb.Query(vector=pb.Vector(values=[1.0]))
    assert cheap(pb.SearchRequest(query=vec), 10**6)
    assert cheap(pb.SearchRequest(query=pb.Query(product_id="p")), 10**6)
    assert cheap(pb.SearchRequest(query=vec, mode=pb.MODE_EXACT), INLINE_EXACT_ROWS)
    assert not cheap(pb.SearchRequest(query=vec, mode=pb.MODE_EXACT), INLINE_EXACT_ROWS + 1)
    assert not cheap(pb.SearchRequest(query=pb.Query(image=b"x")), 10)
    assert not cheap(pb.SearchRequest(query=pb.Query(text="x")), 10)
    assert not cheap(Unparseable("bad"), 10)
    assert not cheap(pb.SearchRequest(query=vec), 10, writing=True)  # would wait for the write lock


def test_aio_loop_stays_free_while_a_write_holds_the_indexes(tmp_path):
    """On the aio server a Search that would wait for the write lock goes to the pool: the event
    loop keeps answering (health here) meanwhile, and the Search completes once the write is done."""
    import threading
    import time
    s = Server(Config(data=str(tmp_path / "data"), dim=D, port=0, server="aio"))
    try:
        with Client(s.target) as c:
            x = fill(c, 50)
            rw = s.catalog._mem.rw
            rw.acquire_write()  # as the indexer does while it adds a graph batch
            try:
                got = {}
                t = threading.Thread(target=lambda: got.update(hit=c.search(vector=x[4], top_k=1)[0].product_id))
                t.start()
                time.sleep(0.2)
                assert t.is_alive()  # the search waits for the write...
                with grpc.insecure_channel(s.target) as ch:
                    t0 = time.perf_counter()
                    h = health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(), timeout=2)
                    assert h.status == health_pb2.HealthCheckResponse.SERVING
                    assert time.perf_counter() - t0 < 1.0  # ...and the loop does not
            finally:
                rw.release_write()
            t.join(10)
            assert got["hit"] == "p4"
    finally:
        s.stop()


def test_min_seq_on_a_single_server(client):
    """A write's seq is read-your-writes: min_seq up to it answers at once and says which seq it
    reflects; one the catalogue has not reached, or a negative one, is INVALID_ARGUMENT."""
    seq = client.upsert([dict(id="m", vector=[1.0] * D)]).seq
    r = client.search_full(vector=[1.0] * D, top_k=1, min_seq=seq)
    assert r.hits[0].product_id == "m" and r.seq == seq
    for bad, words in ((seq + 10, "ahead"), (-1, ">= 0")):
        with pytest.raises(grpc.RpcError) as e:
            client.search(vector=[1.0] * D, min_seq=bad)
        assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT and words in e.value.details()
    d = client.stub.Delete(pb.DeleteRequest(ids=["m"]), timeout=10)
    assert d.deleted == 1 and d.seq == seq + 1


def test_aio_stop_with_an_open_stream_leaves_no_pool_thread_waiting(tmp_path):
    """A SearchStream still open when the aio server stops: its handler thread on the pool must
    finish (it waits on the event loop for the next message), or the process hangs at exit."""
    import queue
    import threading
    from skulens.v1 import skulens_pb2_grpc as pbg
    s = Server(Config(data=str(tmp_path / "d"), dim=4, port=0, server="aio", grace_s=0.5))
    ch = grpc.insecure_channel(s.target)
    q = queue.Queue()

    def frames():
        while (item := q.get()) is not None:
            yield item
    call = pbg.ProductSearchStub(ch).SearchStream(frames())
    q.put(pb.SearchRequest(query=pb.Query(vector=pb.Vector(values=[1, 0, 0, 0])), top_k=1))
    assert next(call).frame == 0
    s.stop(0.5)
    joiner = threading.Thread(target=lambda: s.grpc.pool.shutdown(wait=True), daemon=True)
    joiner.start()
    joiner.join(8)
    q.put(None)
    ch.close()
    assert not joiner.is_alive(), "a pool thread still waits on the stopped server's loop"
