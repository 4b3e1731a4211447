"""Replicas of one store, in process: SQLite shared by several catalogues and a real PostgreSQL
(tests/postgres.py). A write through one is found through the others (at once with wait_seq,
else within the reported lag); deletes and updates likewise; a late replica catches up;
concurrent writers through different replicas leave every replica equal to the store; shards
hold their partition only."""

import sqlite3
import threading
import time

import numpy as np
import pytest

from skulens.catalog import Catalog
from skulens.catalog.store import Partition
from skulens.errors import InvalidArgument

D = 16


@pytest.fixture(params=["sqlite", "postgresql"])
def store(request, tmp_path):
    if request.param == "sqlite":
        return str(tmp_path / "shared.db")
    return request.getfixturevalue("pg_url")


def _open(tmp_path, name, store, **kw):
    return Catalog.open(str(tmp_path / name), D, store=store, **kw)


def _vec(rng, n=1):
    return rng.standard_normal((n, D)).astype(np.float32)


def _ids(cat):
    return set(cat._mem.slots.slot_of)


def test_write_through_a_is_found_through_b(tmp_path, store):
    rng = np.random.default_rng(0)
    a, b = _open(tmp_path, "a", store), _open(tmp_path, "b", store)
    try:
        x = _vec(rng, 50)
        seq = a.upsert([dict(id=f"p{i}", vector=x[i], category="c") for i in range(50)])
        assert b.wait_seq(seq, 5.0) and b.seq >= seq
        assert b.search(x[7], 1, mode="exact")[0].id == "p7" and len(b) == 50
        # an update moves the vector; a delete through b reaches a
        y = _vec(rng)[0]
        seq = a.upsert([dict(id="p7", vector=y)])
        assert b.wait_seq(seq, 5.0)
        assert b.search(y, 1, mode="exact")[0].id == "p7"
        n = b.delete(["p3", "nope"])
        assert n == 1
        assert a.wait_seq(b.seq, 5.0) and "p3" not in a and "p3" not in _ids(a)
        assert all(h.id != "p3" for h in a.search(x[3], 5, mode="exact"))
        # without waiting: eventually, and the lag says how far behind it is
        seq = a.upsert([dict(id="late", vector=y)])
        t0 = time.monotonic()
        while "late" not in b:
            assert time.monotonic() - t0 < 5, b.lag()
            time.sleep(0.002)
        lag = b.lag()
        assert lag["seq"] == 0 and lag["error"] is None and b.seq == seq
        assert b.stats()["lag"]["head"] == seq
    finally:
        a.close()
        b.close()


def test_min_seq_beyond_the_store_is_refused(tmp_path, store):
    a = _open(tmp_path, "a", store)
    try:
        seq = a.upsert([dict(id="x", vector=np.ones(D))])
        with pytest.raises(InvalidArgument, match="ahead"):
            a.wait_seq(seq + 5, 1.0)
    finally:
        a.close()


def test_a_late_replica_catches_up_from_its_snapshot_and_the_store(tmp_path, store):
    rng = np.random.default_rng(1)
    x = _vec(rng, 400)
    a = _open(tmp_path, "a", store)
    try:
        a.upsert([dict(id=f"p{i}", vector=x[i]) for i in range(300)])
        c = _open(tmp_path, "c", store)          # started late: loads what is there
        assert len(c) == 300
        c.close()                               # leaves a snapshot in its own folder
        a.delete([f"p{i}" for i in range(0, 300, 3)])
        a.upsert([dict(id=f"p{i}", vector=x[i]) for i in range(300, 400)])
        a.upsert([dict(id="p1", vector=x[399])])
        c = _open(tmp_path, "c", store)
        try:
            assert c.stats()["snapshot_seq"] > 0
            assert _ids(c) == _ids(a) and c.seq == a.seq
            for i in (1, 2, 350):
                assert [h.id for h in c.search(x[i], 5, mode="exact")] == [h.id for h in a.search(x[i], 5, mode="exact")]
            assert c.search(x[399], 2, mode="exact")[0].id in ("p1", "p399")
        finally:
            c.close()
    finally:
        a.close()


def test_concurrent_writers_through_two_replicas_leave_both_equal_to_the_store(tmp_path, store):
    a, b = _open(tmp_path, "a", store), _open(tmp_path, "b", store)
    try:
        def writer(cat, seed):
            rng = np.random.default_rng(seed)
            for _ in range(40):
                ids = [f"p{j}" for j in rng.choice(120, 6, replace=False)]  # overlapping ids
                if rng.random() < 0.25:
                    cat.delete(ids[:2])
                else:
                    cat.upsert([dict(id=i, vector=_vec(rng)[0]) for i in ids])
        ts = [threading.Thread(target=writer, args=(c, s)) for c, s in ((a, 1), (b, 2))]
        for t in ts:
            t.start()
        for t in ts:
            t.join()
        seq = max(a.seq, b.seq)
        assert a.wait_seq(seq, 5) and b.wait_seq(seq, 5)
        truth = a._store.get(sorted(_ids(a) | _ids(b)))
        assert _ids(a) == _ids(b) == set(truth)
        for pid, p in truth.items():
            for cat in (a, b):
                assert cat.search(p.vector, 1, mode="exact")[0].id == pid
    finally:
        a.close()
        b.close()


def test_shards_hold_their_partition_and_together_the_whole(tmp_path, store):
    rng = np.random.default_rng(3)
    x = _vec(rng, 200)
    s0, s1 = _open(tmp_path, "s0", store, shard="0/2"), _open(tmp_path, "s1", store, shard="1/2")
    try:
        seq = s0.upsert([dict(id=f"p{i}", vector=x[i]) for i in range(200)])  # every id, through shard 0
        assert s1.wait_seq(seq, 5)
        part0, part1 = _ids(s0), _ids(s1)
        assert part0 | part1 == {f"p{i}" for i in range(200)} and not part0 & part1
        assert all(Partition(0, 2).holds(i) for i in part0) and 60 < len(part0) < 140
        # a delete through shard 1 of a product shard 0 holds
        victim = sorted(part0)[0]
        assert s1.delete([victim]) == 1
        assert s0.wait_seq(s1.seq, 5) and victim not in s0
        # the merged top 10 of both shards is the exact answer over everything
        q = x[5]
        live = [i for i in range(200) if f"p{i}" != victim]
        want = [f"p{i}" for i in sorted(live, key=lambda i: -float(x[i] @ q / np.linalg.norm(x[i])))[:10]]
        got = sorted(s0.search(q, 10, mode="exact") + s1.search(q, 10, mode="exact"), key=lambda h: -h.score)[:10]
        assert [h.id for h in got] == want
    finally:
        s0.close()
        s1.close()


def test_a_shard_needs_a_shared_store(tmp_path):
    with pytest.raises(InvalidArgument, match="shared store"):
        Catalog.open(str(tmp_path / "x"), D, shard="0/2")
    with pytest.raises(InvalidArgument, match="i/n"):
        Catalog.open(str(tmp_path / "x"), D, store=str(tmp_path / "s.db"), shard="two")


def test_a_format_1_database_is_migrated(tmp_path):
    """Format 1 kept each product's slot in the table; opening it moves the rows to format 2."""
    path = tmp_path / "old"
    path.mkdir()
    db = sqlite3.connect(path / "catalog.db")
    db.executescript("""
        CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
        INSERT INTO meta VALUES ('format', '1'), ('dim', '16'), ('seq', '3');
        CREATE TABLE products (id TEXT PRIMARY KEY, slot INTEGER NOT NULL UNIQUE, seq INTEGER NOT NULL,
            sku TEXT NOT NULL, title TEXT NOT NULL, category TEXT NOT NULL, attributes TEXT NOT NULL,
            vector BLOB NOT NULL, text_vector BLOB, created REAL NOT NULL, updated REAL NOT NULL);
        CREATE INDEX products_seq ON products (seq);
        CREATE INDEX products_meta ON products (slot, seq, id, category, attributes);
        CREATE TABLE thumbnails (id TEXT PRIMARY KEY, image BLOB NOT NULL);
    """)
    x = np.eye(D, dtype=np.float32)
    db.executemany("INSERT INTO products VALUES (?,?,?,?,?,?,?,?,?,?,?)",
                   [(f"p{i}", 5 - i, 3, "", f"t{i}", "c", "{}", x[i].tobytes(), None, 1.0, 1.0) for i in range(3)])
    db.commit()
    db.close()
    with Catalog.open(str(path), D) as c:
        assert len(c) == 3 and c.seq == 3 and c.get("p1").title == "t1"
        assert c.search(x[2], 1)[0].id == "p2"
        c.upsert([dict(id="p9", vector=x[9])])
    with Catalog.open(str(path), D) as c:
        assert len(c) == 4 and c.search(x[9], 1)[0].id == "p9"


def test_a_replica_that_loses_its_store_says_so_and_comes_back(tmp_path):
    """PostgreSQL stopped under a serving replica: searches go on from memory, writes are
    UNAVAILABLE (never INTERNAL), Stats and metrics show the lag, health turns NOT_SERVING past
    max_lag_s; with the database back the replica catches up and serves again."""
    import urllib.request

    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc
    from postgres import Postgres

    from skulens.client import Client
    from skulens.server import Config, Server

    pg = Postgres()
    try:
        url = pg.database()
        s = Server(Config(data=str(tmp_path / "r"), dim=D, port=0, store=url, max_lag_s=0.5, metrics_port=0))
        other = _open(tmp_path, "other", url)
        try:
            health = health_pb2_grpc.HealthStub(grpc.insecure_channel(s.target))
            status = lambda: health.Check(health_pb2.HealthCheckRequest(), timeout=5).status  # noqa: E731
            with Client(s.target) as c:
                seq = c.upsert([dict(id="a", vector=np.ones(D))]).seq
                assert status() == health_pb2.HealthCheckResponse.SERVING
                other.close()
                pg.halt()
                with pytest.raises(grpc.RpcError) as e:
                    c.upsert([dict(id="b", vector=np.ones(D))])
                assert e.value.code() == grpc.StatusCode.UNAVAILABLE and "PostgreSQL" in e.value.details()
                assert c.search(vector=[1.0] * D)[0].product_id == "a"      # from memory
                t0 = time.monotonic()
                while status() != health_pb2.HealthCheckResponse.NOT_SERVING:
                    assert time.monotonic() - t0 < 10, c.stats()["lag"]
                    time.sleep(0.1)
                lag = c.stats()["lag"]
                assert lag["error"] and lag["s"] > 0.5
                page = urllib.request.urlopen(f"http://127.0.0.1:{s.metrics_port}/metrics", timeout=5).read().decode()
                value = [ln for ln in page.splitlines() if ln.startswith("skulens_replication_lag_seconds ")]
                assert value and float(value[0].split()[1]) > 0.5
                pg.start()
                other = _open(tmp_path, "other", url)
                seq = other.upsert([dict(id="c", vector=-np.ones(D))])
                t0 = time.monotonic()
                while True:  # the readers' pool reconnects with backoff (1 s, doubling): UNAVAILABLE until then
                    try:
                        assert c.search(vector=[-1.0] * D, min_seq=seq)[0].product_id == "c"
                        break
                    except grpc.RpcError as e:
                        assert e.code() == grpc.StatusCode.UNAVAILABLE and time.monotonic() - t0 < 30, e
                        time.sleep(0.2)
                t0 = time.monotonic()
                while status() != health_pb2.HealthCheckResponse.SERVING:
                    assert time.monotonic() - t0 < 10, c.stats()["lag"]
                    time.sleep(0.1)
                assert c.upsert([dict(id="b", vector=np.ones(D))]).seq > seq   # writes again
        finally:
            other.close()
            s.stop(0)
    finally:
        pg.stop()
