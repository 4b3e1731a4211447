"""Durability: kill -9 during ingestion, damaged snapshots and databases,
backup while searching, restore."""

import logging
import os
import signal
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

import catalog_worker as worker
from skulens.catalog import Catalog
from skulens.catalog.indexer import Indexer
from skulens.errors import CorruptCatalog
from synthetic import clustered

D = 32
HERE = os.path.dirname(__file__)
ROUNDS = int(os.environ.get("SKULENS_KILL_ROUNDS", "20"))


def apply(state: dict, seed: int, n: int) -> dict:
    """state: id -> (op that wrote its fields, main vector, {image name: vector})."""
    kind, arg = worker.op(seed, n)
    state = dict(state)
    if kind == "upsert":
        for p in arg:
            state[p["id"]] = (n, p["vector"], p["images"])
    elif kind == "delete":
        for i in arg:
            state.pop(i, None)
    elif arg[0] in state:  # an image edit keeps the product's fields and its other images
        m, v, images = state[arg[0]]
        images = {**images, **arg[1]} if kind == "add_images" else {k: x for k, x in images.items()
                                                                     if k not in arg[1]}
        state[arg[0]] = (m, v, images)
    return state


def stored(path) -> dict:
    with Catalog.open(path, worker.DIM) as c:
        got = c.get_many([f"p{i}" for i in range(worker.POOL)])
        assert len(c) == len(got)
        state = {}
        for pid, p in got.items():
            n = int(p.title[1:])
            assert p.attributes == {"op": str(n)} and p.category == f"c{int(pid[1:]) % 4}"
            state[pid] = (n, p.vector, p.images)
        assert c.stats()["images"] == sum(1 + len(s[2]) for s in state.values())
        # Search agrees with an exact oracle over exactly what is stored: a product scores its best image.
        if state:
            ids = sorted(state)
            for q in clustered(5, worker.DIM, seed=len(state)):
                q = q / np.linalg.norm(q)
                s = np.array([max(float(v @ q) for v in (st[1], *st[2].values())) for st in map(state.get, ids)])
                k = min(10, len(ids))
                want = [ids[i] for i in np.argsort(-s, kind="stable")[:k]]
                hits = c.search(q, 10, mode="exact")
                assert [h.id for h in hits] == want or np.allclose([h.score for h in hits], np.sort(s)[::-1][:k],
                                                                   atol=1e-5)
                auto = c.search(q, 10, mode="auto")
                assert len(auto) == k and len({h.id for h in auto}) == k
    return state


def same(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(
        a[i][0] == b[i][0] and np.allclose(a[i][1], b[i][1], atol=1e-6) and a[i][2].keys() == b[i][2].keys()
        and all(np.allclose(a[i][2][m], b[i][2][m], atol=1e-6) for m in a[i][2]) for i in a)


def test_kill_9_loses_nothing_acknowledged(tmp_path):
    path, seed = str(tmp_path / "cat"), 7
    rng = np.random.default_rng(1)
    state, nxt, kills, partial = {}, 0, 0, 0
    env = dict(os.environ, PYTHONPATH=HERE + os.pathsep + os.environ.get("PYTHONPATH", ""))
    for _ in range(ROUNDS):
        proc = subprocess.Popen([sys.executable, os.path.join(HERE, "catalog_worker.py"), path, str(seed),
                                 str(nxt)], stdout=subprocess.PIPE, text=True, env=env)
        lines: list[str] = []
        reader = threading.Thread(target=lambda: lines.extend(proc.stdout), daemon=True)
        reader.start()
        # Wait until it is ingesting, then kill at a random moment.
        deadline = time.time() + 60
        while not any(l.startswith("ACK") for l in list(lines)) and time.time() < deadline and proc.poll() is None:
            time.sleep(0.01)
        time.sleep(float(rng.uniform(0.0, 0.4)))
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        reader.join()
        kills += 1
        acked = [int(l.split()[1]) for l in lines if l.startswith("ACK")]
        begun = [int(l.split()[1]) for l in lines if l.startswith("BEGIN")]
        assert acked, "the worker never acknowledged a write"
        for n in acked:
            state = apply(state, seed, n)
        got = stored(path)
        inflight = [n for n in begun if n not in acked]
        if inflight and not same(got, state):
            # The op in flight may have committed before the kill: all of it, never part.
            with_it = apply(state, seed, inflight[0])
            assert same(got, with_it), "state is neither before nor after the in-flight write"
            state, partial = with_it, partial + 1
            nxt = inflight[0] + 1
        else:
            assert same(got, state), "an acknowledged write is missing or wrong"
            nxt = max(acked) + 1
    assert kills == ROUNDS
    logging.getLogger(__name__).info("%d kills, %d in-flight writes committed", kills, partial)


def _fill(path, n=600):
    x = clustered(n, D, seed=1)
    with Catalog.open(path, D) as c:
        c.upsert([dict(id=f"p{i}", category=f"c{i % 3}", vector=x[i]) for i in range(n)])
    return x


def _snapshots(path):
    root = os.path.join(path, "snapshots")
    return [os.path.join(root, d) for d in sorted(os.listdir(root))]


@pytest.mark.parametrize("damage", ["flip", "truncate", "manifest", "remove_file", "remove_all"])
def test_damaged_snapshot_is_rebuilt_from_sqlite_with_a_warning(tmp_path, caplog, damage):
    path = str(tmp_path / "c")
    x = _fill(path)
    snap = _snapshots(path)[-1]
    graph = os.path.join(snap, "hnsw.bin")
    if damage == "flip":
        with open(graph, "r+b") as f:
            f.seek(os.path.getsize(graph) // 2)
            b = f.read(1)
            f.seek(-1, 1)
            f.write(bytes([b[0] ^ 0xFF]))
    elif damage == "truncate":
        os.truncate(graph, os.path.getsize(graph) // 3)
    elif damage == "manifest":
        with open(os.path.join(snap, "manifest.json"), "w") as f:
            f.write("{not json")
    elif damage == "remove_file":
        os.remove(os.path.join(snap, "slot_seq.npy"))
    else:
        import shutil
        shutil.rmtree(os.path.join(path, "snapshots"))
    with caplog.at_level(logging.WARNING, logger="skulens"):
        with Catalog.open(path, D) as c:
            assert len(c) == 600
            for i in (0, 17, 599):
                assert c.search(x[i], 1, mode="ann")[0].id == f"p{i}"
                assert c.search(x[i], 1, mode="exact")[0].id == f"p{i}"
            assert len(c.search(x[0], 50, filters="category=c1")) == 50
    assert "rebuilding the indexes from SQLite" in caplog.text


def test_older_snapshot_plus_replay(tmp_path):
    path = str(tmp_path / "c")
    x = _fill(path, 300)
    y = clustered(300, D, seed=5)
    with Catalog.open(path, D, keep_snapshots=3) as c:
        c.upsert([dict(id=f"q{i}", vector=y[i]) for i in range(100)])
        c.delete([f"p{i}" for i in range(50)])
        c.upsert([dict(id=f"p{i}", vector=y[200 + i]) for i in range(50, 60)])  # move vectors
    snaps = _snapshots(path)
    assert len(snaps) == 2
    with open(os.path.join(snaps[-1], "slot_seq.npy"), "r+b") as f:  # newest damaged: use the older one
        f.seek(-8, 2)
        f.write(b"\xff" * 8)
    with Catalog.open(path, D) as c:
        st = c.stats()
        assert len(c) == 350 and st["snapshot_seq"] == 1
        assert c.search(y[3], 1, mode="ann")[0].id == "q3"
        assert c.search(y[255], 1, mode="ann")[0].id == "p55"
        assert all(h.id not in {f"p{i}" for i in range(50)} for h in c.search(x[5], 30, mode="ann"))


def test_corrupt_database_names_the_file(tmp_path):
    path = str(tmp_path / "c")
    _fill(path)
    db = os.path.join(path, "catalog.db")
    with open(db, "r+b") as f:
        f.write(b"this is not sqlite" * 10)
    with pytest.raises(CorruptCatalog, match="catalog.db"):
        Catalog.open(path, D)


def test_damaged_pages_fail_clearly(tmp_path):
    path = str(tmp_path / "c")
    _fill(path, 2000)
    db = os.path.join(path, "catalog.db")
    size = os.path.getsize(db)
    with open(db, "r+b") as f:
        for off in range(8192, size, 4096):
            f.seek(off)
            f.write(b"\x00\xff" * 100)
    with pytest.raises(CorruptCatalog, match="catalog.db"):
        Catalog.open(path, D)


def test_backup_while_searching_then_restore(tmp_path):
    path = str(tmp_path / "c")
    x = _fill(path, 2000)
    stop, errors, done = threading.Event(), [], [0]
    with Catalog.open(path, D) as c:
        def searcher():
            while not stop.is_set():
                try:
                    assert c.search(x[7], 1, mode="ann")[0].id == "p7"
                    done[0] += 1
                except Exception as e:  # noqa: BLE001 - reported below
                    errors.append(e)
        t = threading.Thread(target=searcher)
        t.start()
        c.snapshot(str(tmp_path / "bak"))
        before = done[0]
        c.upsert([dict(id="after", vector=x[0])])  # not in the backup
        time.sleep(0.05)
        stop.set()
        t.join()
        assert not errors and before > 0
        with pytest.raises(Exception, match="not empty"):
            c.snapshot(str(tmp_path / "bak"))
    with Catalog.restore(str(tmp_path / "bak"), str(tmp_path / "r"), D) as r:
        assert len(r) == 2000 and "after" not in r
        assert r.stats()["changes_since_snapshot"] == 0  # opened from the backup's own snapshot
        assert r.search(x[9], 1, mode="ann")[0].id == "p9"
    with pytest.raises(Exception, match="already holds"):
        Catalog.restore(str(tmp_path / "bak"), str(tmp_path / "r"), D)


def test_backlog_survives_a_restart_and_rebuilds_in_the_background(tmp_path, monkeypatch):
    path = str(tmp_path / "c")
    x = _fill(path, 500)
    y = clustered(300, D, seed=8)
    with monkeypatch.context() as m:
        m.setattr(Indexer, "_run", lambda self: None)  # fault injection: no indexer at all
        with Catalog.open(path, D) as c:
            c.upsert([dict(id=f"n{i}", vector=y[i]) for i in range(300)])
            assert c.stats()["hnsw"]["unindexed"] == 300
            assert c.search(y[5], 1, mode="ann")[0].id == "n5"
    with Catalog.open(path, D) as c:  # the snapshot written on close lacks them: re-added in the background
        assert c.search(y[9], 1, mode="ann")[0].id == "n9"
        assert c.wait_indexed(60) and c.stats()["hnsw"]["unindexed"] == 0
        assert c.search(y[10], 1, mode="ann")[0].id == "n10"
        assert c.search(x[10], 1, mode="ann")[0].id == "p10"
    with Catalog.open(path, D) as c:  # and the snapshot written after indexing holds them
        assert c.stats()["hnsw"]["unindexed"] == 0
