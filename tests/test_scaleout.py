"""Scale-out with real processes on loopback: replicas of one PostgreSQL (tests/postgres.py),
`skulens serve --workers 2` on SQLite, and 2 shards x 2 replicas behind `skulens route`.

A write through one replica is found through another (with min_seq: at once); a replica
started late or killed with kill -9 catches up; no acknowledged write is lost over kill
rounds (SKULENS_REPLICA_KILL_ROUNDS, 10 by default); through the route the answer equals the
exact answer over the whole catalogue, a replica killed mid-load costs no failed search, a
whole shard down gives a flagged partial answer within the deadline, and errors and auth are
the same as direct."""

import os
import signal
import subprocess
import sys
import threading
import time

import grpc
import numpy as np
import pytest

from skulens.client import Client
from skulens.client.client import search_request
from skulens.route import Router
from skulens.v1 import skulens_pb2 as pb

D = 16
ROUNDS = int(os.environ.get("SKULENS_REPLICA_KILL_ROUNDS", "10"))


class Proc:
    """A `skulens serve` process; .target once it serves."""

    def __init__(self, *args, env=None):
        e = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path), **(env or {}))
        self.args = [sys.executable, "-m", "skulens.cli", "serve", "--port", "0", "--dim", str(D), *args]
        self.p = subprocess.Popen(self.args, env=e, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                                  start_new_session=True)
        for line in self.p.stdout:
            if line.startswith("skulens serving on"):
                self.target = line.split(" on ")[1].split(" ")[0]
                break
        else:
            raise RuntimeError(f"{self.args} exited with {self.p.wait()}")
        threading.Thread(target=lambda: [None for _ in self.p.stdout], daemon=True).start()  # keep the pipe drained

    def kill9(self):
        os.killpg(self.p.pid, signal.SIGKILL)
        self.p.wait(10)

    def stop(self):
        if self.p.poll() is None:
            self.p.send_signal(signal.SIGTERM)
            try:
                self.p.wait(20)
            except subprocess.TimeoutExpired:
                self.kill9()


@pytest.fixture
def procs():
    started = []
    yield lambda *a, **kw: started.append(Proc(*a, **kw)) or started[-1]
    for p in started:
        p.stop()


def _vecs(n, seed=0):
    return np.random.default_rng(seed).standard_normal((n, D)).astype(np.float32)


def _top(c, v, k=1, **kw):
    return [h.product_id for h in c.search(vector=v.tolist(), top_k=k, mode="exact", **kw)]


def test_three_replicas_of_one_postgresql(tmp_path, pg_url, procs):
    a = procs("--data", str(tmp_path / "a"), "--store", pg_url)
    b = procs("--data", str(tmp_path / "b"), "--store", pg_url)
    x = _vecs(60)
    with Client(a.target) as ca, Client(b.target) as cb:
        seq = ca.upsert([dict(id=f"p{i}", vector=x[i]) for i in range(50)]).seq
        assert _top(cb, x[9], min_seq=seq) == ["p9"]
        r = cb.stub.Delete(pb.DeleteRequest(ids=["p9"]), timeout=10)
        assert r.deleted == 1 and r.seq > seq
        assert "p9" not in _top(ca, x[9], k=5, min_seq=r.seq)
        c = procs("--data", str(tmp_path / "c"), "--store", pg_url)   # started late
        with Client(c.target) as cc:
            assert cc.stats()["products"] == 49 and _top(cc, x[3]) == ["p3"]
        c.kill9()
        seq = ca.upsert([dict(id=f"p{i}", vector=x[i]) for i in range(50, 60)]).seq
        c = procs("--data", str(tmp_path / "c"), "--store", pg_url)   # restarted after kill -9
        with Client(c.target) as cc:
            assert _top(cc, x[55], min_seq=seq) == ["p55"] and cc.stats()["products"] == 59
            # a write through the restarted one reaches the others
            seq = cc.upsert([dict(id="late", vector=x[9])]).seq
        assert _top(ca, x[9], min_seq=seq) == ["late"] and _top(cb, x[9], min_seq=seq) == ["late"]
        st = cb.stats()
        assert st["store"].startswith("postgresql://") and st["lag"]["seq"] == 0 and "skulens@" in st["store"]


def test_acknowledged_writes_through_a_killed_replica_are_on_the_other(tmp_path, pg_url, procs):
    b = procs("--data", str(tmp_path / "b"), "--store", pg_url)
    rng = np.random.default_rng(1)
    acked, sent, last_seq = [], [], 0
    n = 0
    for rnd in range(ROUNDS):
        a = Proc("--data", str(tmp_path / "a"), "--store", pg_url)
        stop = threading.Event()

        def writer():
            nonlocal n, last_seq
            with Client(a.target, timeout=5) as c:
                while not stop.is_set():
                    k = n
                    n += 1
                    sent.append(k)
                    try:
                        last_seq = max(last_seq, c.upsert([dict(id=f"b{k}-{j}", vector=rng.standard_normal(D))
                                                           for j in range(10)]).seq)
                        acked.append(k)
                    except grpc.RpcError:
                        return
        t = threading.Thread(target=writer)
        t.start()
        time.sleep(0.2 + 0.5 * rng.random())
        a.kill9()
        stop.set()
        t.join(20)
    assert len(acked) >= ROUNDS
    with Client(b.target) as cb:
        cb.search(vector=[1.0] * D, min_seq=last_seq)
        got = {}
        for k in sent:
            present = 0
            for j in range(10):
                try:
                    cb.get(f"b{k}-{j}")
                    present += 1
                except grpc.RpcError as e:
                    assert e.code() == grpc.StatusCode.NOT_FOUND
            got[k] = present
        assert all(got[k] == 10 for k in acked), "an acknowledged batch is missing"
        assert all(v in (0, 10) for v in got.values()), "a batch is half-present"
        assert cb.stats()["products"] == 10 * sum(1 for v in got.values() if v)


def _pids(target, tries=24):
    """The server processes that answer on target, seen over fresh connections."""
    pids = set()
    for _ in range(tries):
        with Client(target, options=[("grpc.use_local_subchannel_pool", 1)]) as c:
            pids.add(c.stats()["pid"])
    return pids


def test_workers_2_on_sqlite(tmp_path, procs):
    data = tmp_path / "w"
    s = procs("--data", str(data), "--workers", "2")
    x = _vecs(40, seed=2)
    pids = _pids(s.target)
    assert len(pids) == 2
    with Client(s.target) as c:
        seq = c.upsert([dict(id=f"p{i}", vector=x[i]) for i in range(30)]).seq
    for _ in range(8):  # whichever worker a connection lands on, min_seq finds the write
        with Client(s.target, options=[("grpc.use_local_subchannel_pool", 1)]) as c:
            assert _top(c, x[7], min_seq=seq) == ["p7"]
    os.kill(sorted(pids)[0], signal.SIGKILL)           # one worker dies: the supervisor restarts it
    t0 = time.monotonic()
    while True:
        try:
            now = _pids(s.target, 12)
            if len(now) == 2 and now != pids:
                break
        except grpc.RpcError:
            pass
        assert time.monotonic() - t0 < 30, "the killed worker did not come back"
        time.sleep(0.5)
    with Client(s.target) as c:
        seq = c.upsert([dict(id=f"p{i}", vector=x[i]) for i in range(30, 40)]).seq
    for _ in range(8):
        with Client(s.target, options=[("grpc.use_local_subchannel_pool", 1)]) as c:
            assert _top(c, x[35], min_seq=seq) == ["p35"] and c.stats()["products"] == 40
    assert os.path.isdir(data / "workers" / "0" / "snapshots") or os.path.isdir(data / "workers" / "0")


@pytest.fixture
def sharded(tmp_path, pg_url, procs):
    """2 shards x 2 replicas on one PostgreSQL, and a route over them."""
    shards = [[procs("--data", str(tmp_path / f"s{i}r{r}"), "--store", pg_url, "--shard", f"{i}/2")
               for r in range(2)] for i in range(2)]
    route = Router([[p.target for p in reps] for reps in shards])
    yield shards, route
    route.stop(0)


def test_route_equals_the_exact_answer_and_survives_a_replica(sharded):
    shards, route = sharded
    x = _vecs(300, seed=3)
    with Client(route.target) as c:
        seq = c.upsert([dict(id=f"p{i}", vector=x[i], category="even" if i % 2 == 0 else "odd")
                        for i in range(300)]).seq
        assert c.stats(min_seq=seq)["products"] == 300  # without min_seq a replica may still be catching up
        unit = x / np.linalg.norm(x, axis=1, keepdims=True)
        for qi in (0, 17, 123):
            r = c.stub.Search(search_request(vector=x[qi].tolist(), top_k=10, mode="exact", min_seq=seq), timeout=10)
            want = [f"p{i}" for i in np.argsort(-(unit @ unit[qi]), kind="stable")[:10]]
            assert [h.product_id for h in r.hits] == want and not r.missing_shards and r.seq >= seq
        hits = c.search(vector=x[4].tolist(), top_k=5, filters="category=even")
        assert hits[0].product_id == "p4" and all(int(h.product_id[1:]) % 2 == 0 for h in hits)
        # a replica killed mid-load: no search fails
        errors, done, stop = [], [0], threading.Event()

        def load():
            with Client(route.target, timeout=5) as lc:
                while not stop.is_set():
                    try:
                        r = lc.search_full(vector=x[done[0] % 300].tolist(), top_k=3)
                        assert not r.missing_shards, r.missing_shards
                        done[0] += 1
                    except (grpc.RpcError, AssertionError) as e:
                        errors.append(e)
        ts = [threading.Thread(target=load) for _ in range(2)]
        for t in ts:
            t.start()
        time.sleep(0.5)
        shards[1][0].kill9()
        time.sleep(1.5)
        stop.set()
        for t in ts:
            t.join()
        assert not errors and done[0] > 20
        # the whole shard down: flagged partial answers, within the deadline
        shards[1][1].kill9()
        t0 = time.monotonic()
        r = c.stub.Search(search_request(vector=x[0].tolist(), top_k=10), timeout=2)
        assert time.monotonic() - t0 < 2.5
        assert r.missing_shards and r.missing_shards[0].startswith("1/2") and len(r.hits) == 10
        assert all(Router is not None and h.product_id for h in r.hits)


def test_the_api_through_route_is_the_api_direct(tmp_path, pg_url, procs):
    from skulens.security.keys import KeyStore
    keys = str(tmp_path / "keys.json")
    ks = KeyStore(keys)
    _, read = ks.add("read")
    _, write = ks.add("write")
    reps = [procs("--data", str(tmp_path / f"s{i}"), "--store", pg_url, "--shard", f"{i}/2", "--keys", keys)
            for i in range(2)]
    route = Router([[reps[0].target], [reps[1].target]])
    from skulens.catalog.store import Partition
    pid = next(f"a{i}" for i in range(100) if Partition(0, 2).holds(f"a{i}"))  # on the shard asked direct
    try:
        for target in (reps[0].target, route.target):
            with Client(target, api_key=write) as c:
                seq = c.upsert([dict(id=pid, vector=[1.0] * D)]).seq
                with pytest.raises(grpc.RpcError) as e:
                    c.search(vector=[1.0] * D, top_k=5000)
                assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "top_k" in e.value.details()
                with pytest.raises(grpc.RpcError) as e:
                    c.get("missing")
                assert e.value.code() == grpc.StatusCode.NOT_FOUND
                with pytest.raises(grpc.RpcError) as e:
                    c.search(vector=[1.0] * (D + 1))
                assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            with Client(target) as anon, pytest.raises(grpc.RpcError) as e:
                anon.search(vector=[1.0] * D)
            assert e.value.code() == grpc.StatusCode.UNAUTHENTICATED
            with Client(target, api_key=read) as c:
                assert c.search(vector=[1.0] * D, min_seq=seq)[0].product_id == pid
                frames = list(c.search_stream([dict(vector=[1.0] * D, top_k=3)] * 4))
                assert [f.frame for f in frames] == [0, 1, 2, 3] and frames[-1].fused[0].product_id == pid
                with pytest.raises(grpc.RpcError) as e:
                    c.upsert([dict(id="b", vector=[1.0] * D)])
                assert e.value.code() == grpc.StatusCode.PERMISSION_DENIED
        # bytes that are not a message: INVALID_ARGUMENT through the route too
        ch = grpc.insecure_channel(route.target)
        call = ch.unary_unary("/skulens.v1.ProductSearch/Search", request_serializer=lambda b: b,
                              response_deserializer=lambda b: b)
        with pytest.raises(grpc.RpcError) as e:
            call(b"\xff\xff\xff", timeout=5)
        assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        ch.close()
    finally:
        route.stop(0)


def test_skulens_route_command(tmp_path, pg_url, procs):
    rep = procs("--data", str(tmp_path / "s0"), "--store", pg_url)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    p = subprocess.Popen([sys.executable, "-m", "skulens.cli", "route", "--shards", rep.target, "--port", "0"],
                         env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        line = p.stdout.readline()
        assert line.startswith("skulens routing on"), line
        target = line.split(" on ")[1].split(" ")[0]
        with Client(target) as c:
            seq = c.upsert([dict(id="r", vector=[1.0] * D)]).seq
            assert _top(c, np.ones(D, np.float32), min_seq=seq) == ["r"]
    finally:
        p.terminate()
        p.wait(30)
