"""Several reference images per product: one hit per product with its best image, k distinct
products, filters per product, image edits that leave the other images alone, the limits, every
search mode, snapshots, restarts, migration from format 2, replicas on SQLite and PostgreSQL,
and the gRPC API (vectors and real image bytes through the shipped encoder).
(kill -9 with image edits in flight: test_catalog_durability.py.)"""

import sqlite3
import threading

import grpc
import numpy as np
import pytest

from skulens.catalog import Catalog
from skulens.errors import InvalidArgument, NotFound
from skulens.limits import MAX_IMAGES

D = 16
MODES = ("exact", "ann", "auto")


def unit(v):
    v = np.asarray(v, np.float64)
    return (v / np.linalg.norm(v)).astype(np.float32)


def catalogue(n=300, extra=2, seed=0):
    """n products p0.. with a main vector and `extra` other images each (named v0, v1...)."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, 1 + extra, D)).astype(np.float32)
    x /= np.linalg.norm(x, axis=2, keepdims=True)
    return x, [dict(id=f"p{i}", category=f"c{i % 3}", vector=x[i, 0], images={f"v{j}": x[i, 1 + j] for j in range(extra)})
               for i in range(n)]


def oracle(x, q, k, allow=None):
    """The products best by their best image (max fusion), computed by brute force."""
    s = (x @ unit(q)).max(axis=1)
    order = [i for i in np.argsort(-s, kind="stable") if allow is None or allow(i)]
    return [f"p{i}" for i in order[:k]], s


@pytest.fixture
def cat(tmp_path):
    c = Catalog.open(str(tmp_path / "cat"), D, exact_below=50, exact_filtered_below=20)
    yield c
    c.close()


def test_one_hit_per_product_scored_by_its_best_image(cat):
    x, products = catalogue()
    cat.upsert(products)
    cat.wait_indexed(30)
    assert len(cat) == 300 and cat.stats()["images"] == 900
    rng = np.random.default_rng(1)
    for mode in MODES:
        agree = 0
        for t in range(20):
            i, j = int(rng.integers(300)), int(rng.integers(3))
            q = x[i, j] + 0.05 * rng.standard_normal(D).astype(np.float32)
            hits = cat.search(q, 10, mode=mode)
            ids = [h.id for h in hits]
            assert len(ids) == len(set(ids)) == 10, "one hit per product, k of them"
            assert hits[0].id == f"p{i}" and hits[0].image == ("" if j == 0 else f"v{j - 1}")
            want, s = oracle(x, q, 10)
            assert all(abs(h.score - s[int(h.id[1:])]) < 1e-4 for h in hits), "a product scores its best image"
            agree += ids == want
        assert agree >= (20 if mode == "exact" else 17), mode


def test_k_distinct_products_when_one_product_has_many_near_images(cat):
    q = unit(np.arange(1, D + 1))
    near = {f"n{j}": unit(q + 0.01 * np.eye(D)[j]) for j in range(MAX_IMAGES - 1)}
    rng = np.random.default_rng(2)
    others = [dict(id=f"o{i}", vector=unit(rng.standard_normal(D)),
                   images={f"v{j}": unit(q + 0.5 * rng.standard_normal(D)) for j in range(MAX_IMAGES - 1)})
              for i in range(6)]
    cat.upsert([dict(id="big", vector=q, images=near), *others])
    for mode in MODES:
        hits = cat.search(q, 7, mode=mode)
        assert [h.id for h in hits][0] == "big" and len({h.id for h in hits}) == 7, mode
    top = cat.search(q, 2, mode="exact", images=4)[0]
    assert top.image == "" and len(top.images) == 4 and top.images[0] == ("", pytest.approx(1.0))
    assert [s for _, s in top.images] == sorted((s for _, s in top.images), reverse=True)


def test_filters_apply_per_product(cat):
    x, products = catalogue(n=120)
    cat.upsert(products)
    for mode in MODES:
        q = x[5, 2]
        hits = cat.search(q, 15, filters="category=c1", mode=mode)
        assert len({h.id for h in hits}) == 15 and all(int(h.id[1:]) % 3 == 1 for h in hits)
        want, _ = oracle(x, q, 15, allow=lambda i: i % 3 == 1)
        if mode == "exact":
            assert [h.id for h in hits] == want


def test_image_edits_leave_the_other_images_alone(cat):
    x, products = catalogue(n=50)
    cat.upsert(products)
    before = cat.get("p7")
    new = unit(np.ones(D))
    seq, held = cat.add_images("p7", {"box": new})
    assert held == 4 and cat.seq == seq
    after = cat.get("p7")
    assert list(after.images) == ["v0", "v1", "box"] and np.allclose(after.vector, before.vector)
    assert all(np.allclose(after.images[n], before.images[n]) for n in ("v0", "v1"))
    assert (after.title, after.category, after.created) == (before.title, before.category, before.created)
    assert cat.search(new, 1)[0][:3] == ("p7", pytest.approx(1.0), "box")
    cat.add_images("p7", {"box": -new})                               # replaces by name
    assert cat.stats()["images"] == 151 and cat.search(-new, 1)[0][:3] == ("p7", pytest.approx(1.0), "box")
    assert all(h.image != "box" or h.score < 0 for h in cat.search(new, 50) if h.id == "p7")
    seq2, held, removed = cat.remove_images("p7", ["box", "v0", "nope"])
    assert (held, removed) == (2, 2) and seq2 > seq and list(cat.get("p7").images) == ["v1"]
    assert cat.search(x[7, 0], 1)[0][:3] == ("p7", pytest.approx(1.0), "")
    assert cat.search(x[7, 2], 1)[0][:3] == ("p7", pytest.approx(1.0), "v1")
    assert all(h.image != "v0" for h in cat.search(x[7, 1], 50) if h.id == "p7")
    # An upsert replaces the whole product, its image set included.
    cat.upsert([dict(id="p7", vector=x[7, 0])])
    assert cat.get("p7").images == {} and cat.stats()["images"] == 148


def test_the_limits_and_what_is_refused(cat):
    cat.upsert([dict(id="a", vector=unit(np.ones(D)))])
    many = {f"i{j}": unit(np.eye(D)[j % D] + j) for j in range(MAX_IMAGES)}
    with pytest.raises(InvalidArgument, match="at most 16"):
        cat.upsert([dict(id="b", vector=unit(np.ones(D)), images=many)])
    cat.add_images("a", dict(list(many.items())[:MAX_IMAGES - 1]))
    with pytest.raises(InvalidArgument, match="at most 16"):
        cat.add_images("a", {"one-more": unit(np.ones(D))})
    with pytest.raises(NotFound, match="nope"):
        cat.add_images("nope", {"x": unit(np.ones(D))})
    with pytest.raises(NotFound):
        cat.remove_images("nope", ["x"])
    for bad, match in (({"": unit(np.ones(D))}, "non-empty"), ({"x" * 65: unit(np.ones(D))}, "64 bytes"),
                       ({"a\nb": unit(np.ones(D))}, "printable"), ({"z": np.zeros(D)}, "zero"),
                       ({"z": np.ones(D + 1)}, "shape"), ({"z": [float("nan")] * D}, "NaN")):
        with pytest.raises(InvalidArgument, match=match):
            cat.add_images("a", bad)
    with pytest.raises(InvalidArgument, match="non-empty"):
        cat.remove_images("a", [""])
    with pytest.raises(InvalidArgument, match="images per hit"):
        cat.search(np.ones(D), 3, images=MAX_IMAGES + 1)
    assert cat.stats()["images"] == MAX_IMAGES and len(cat.get("a").images) == MAX_IMAGES - 1  # nothing half-done


def test_memory_is_one_slot_per_image_and_slots_are_reused(cat):
    x, products = catalogue(n=100, extra=3)
    for _ in range(3):
        cat.upsert(products)
        cat.delete([f"p{i}" for i in range(0, 100, 2)])
        cat.upsert(products[::2])
    st = cat.stats()
    assert st["images"] == 400 and st["slots"] == 400 and st["free_slots"] == 0
    for i in range(0, 100, 2):
        cat.remove_images(f"p{i}", ["v0", "v1", "v2"])
    assert cat.stats()["images"] == 250 and cat.stats()["free_slots"] == 150
    cat.add_images("p0", {"w": x[0, 1]})
    assert cat.stats()["slots"] == 400, "a freed slot is reused"


@pytest.mark.parametrize("snapshot", [True, False])
def test_images_survive_a_restart_from_a_snapshot_or_the_store(tmp_path, snapshot):
    path = str(tmp_path / "cat")
    x, products = catalogue(n=200)
    with Catalog.open(path, D, exact_below=50) as c:
        c.upsert(products)
        c.wait_indexed(30)
        c.checkpoint()
        c.add_images("p3", {"late": unit(np.ones(D))})   # after the snapshot: replayed
        c.remove_images("p4", ["v0"])
        c.close(snapshot=snapshot)
    with Catalog.open(path, D, exact_below=50) as c:
        assert c.stats()["images"] == 600 and list(c.get("p4").images) == ["v1"]
        c.wait_indexed(30)
        for mode in MODES:
            assert c.search(np.ones(D), 1, mode=mode)[0][:3] == ("p3", pytest.approx(1.0), "late")
            assert c.search(x[9, 2], 1, mode=mode)[0][:3] == ("p9", pytest.approx(1.0), "v1")
            assert all(h.image != "v0" for h in c.search(x[4, 1], 20, mode=mode) if h.id == "p4")


def test_concurrent_image_edits_of_one_product_lose_none(cat):
    cat.upsert([dict(id="p", vector=unit(np.ones(D)))])
    rng = np.random.default_rng(3)
    vecs = [unit(rng.standard_normal(D)) for _ in range(MAX_IMAGES - 1)]

    def add(j):
        cat.add_images("p", {f"i{j}": vecs[j]})
    threads = [threading.Thread(target=add, args=(j,)) for j in range(MAX_IMAGES - 1)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(cat.get("p").images) == sorted(f"i{j}" for j in range(MAX_IMAGES - 1))
    assert all(cat.search(v, 1, mode="exact")[0].image == f"i{j}" for j, v in enumerate(vecs))


def test_a_format_2_database_is_migrated(tmp_path):
    """Format 2 had one image per product: opening it adds the image columns, rows untouched."""
    path = tmp_path / "old"
    path.mkdir()
    db = sqlite3.connect(path / "catalog.db")
    db.executescript("""
        CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
        INSERT INTO meta VALUES ('format', '2'), ('dim', '16'), ('seq', '4');
        CREATE TABLE products (id TEXT PRIMARY KEY, bucket INTEGER NOT NULL, seq INTEGER NOT NULL,
            sku TEXT NOT NULL, title TEXT NOT NULL, category TEXT NOT NULL, attributes TEXT NOT NULL,
            vector BLOB NOT NULL, text_vector BLOB, created REAL NOT NULL, updated REAL NOT NULL);
        CREATE INDEX products_seq ON products (seq);
        CREATE INDEX products_meta ON products (bucket, seq, id, category, attributes);
        CREATE TABLE thumbnails (id TEXT PRIMARY KEY, image BLOB NOT NULL);
        CREATE TABLE tombstones (id TEXT PRIMARY KEY, bucket INTEGER NOT NULL, seq INTEGER NOT NULL);
        CREATE INDEX tombstones_seq ON tombstones (seq);
    """)
    x = np.eye(D, dtype=np.float32)
    db.executemany("INSERT INTO products VALUES (?,?,?,?,?,?,?,?,?,?,?)",
                   [(f"p{i}", 0, 4, "", f"t{i}", "c", "{}", x[i].tobytes(), None, 1.0, 1.0) for i in range(3)])
    db.commit()
    db.close()
    with Catalog.open(str(path), D) as c:
        assert len(c) == 3 and c.get("p1").title == "t1" and c.get("p1").images == {}
        c.add_images("p1", {"back": x[7]})
    with Catalog.open(str(path), D) as c:
        assert c.search(x[7], 1)[0][:3] == ("p1", pytest.approx(1.0), "back")
    assert sqlite3.connect(path / "catalog.db").execute("SELECT value FROM meta WHERE key='format'").fetchone()[0] == "3"


@pytest.fixture(params=["sqlite", "postgresql"])
def store(request, tmp_path):
    if request.param == "sqlite":
        return str(tmp_path / "shared.db")
    return request.getfixturevalue("pg_url")


def test_replicas_see_each_others_image_edits(tmp_path, store):
    x, products = catalogue(n=60)
    with Catalog.open(str(tmp_path / "a"), D, store=store) as a, Catalog.open(str(tmp_path / "b"), D,
                                                                              store=store) as b:
        a.upsert(products)
        seq, _ = b.add_images("p5", {"new": unit(np.ones(D))})
        assert a.wait_seq(seq, 10)
        assert a.search(np.ones(D), 1)[0][:3] == ("p5", pytest.approx(1.0), "new")
        seq, _, _ = a.remove_images("p5", ["new", "v0"])
        assert b.wait_seq(seq, 10)
        assert list(b.get("p5").images) == ["v1"] and b.stats()["images"] == a.stats()["images"] == 179
        assert a.search(np.ones(D), 1)[0].id != "p5" or a.search(np.ones(D), 1)[0].image != "new"


# --- through gRPC ------------------------------------------------------------------------------------
@pytest.fixture(params=["sync", "aio"])
def client(tmp_path, request):
    from skulens.client import Client
    from skulens.server import Config, Server
    s = Server(Config(data=str(tmp_path / "data"), dim=D, port=0, grace_s=2, server=request.param))
    with Client(s.target) as c:
        yield c
    s.stop()


def test_grpc_images_upsert_search_get_edit(client):
    x, products = catalogue(n=80)
    client.upsert(products)
    r = client.search_full(vector=x[11, 2], top_k=5, images_per_hit=3)
    assert r.hits[0].product_id == "p11" and r.hits[0].image_id == "v1" and len({h.product_id for h in r.hits}) == 5
    assert [i.image_id for i in r.hits[0].images][0] == "v1" and len(r.hits[0].images) == 3
    assert client.search(vector=x[11, 0], top_k=1)[0].image_id == ""
    p = client.get("p11", include_vector=True)
    assert [i.id for i in p.images] == ["v0", "v1"] and np.allclose(p.images[1].vector, x[11, 2], atol=1e-6)
    r = client.add_images("p11", {"box": np.ones(D).tolist()})
    assert (r.images, r.changed) == (4, 1) and r.seq > 0
    assert client.search(vector=np.ones(D), top_k=1, min_seq=r.seq)[0].image_id == "box"
    r = client.remove_images("p11", ["box", "v0"])
    assert (r.images, r.changed) == (2, 2)
    assert [i.id for i in client.get("p11").images] == ["v1"]
    assert client.stats()["images"] == 80 * 3 - 1


def test_grpc_image_errors_have_the_callers_codes(client):
    from skulens.v1 import skulens_pb2 as pb
    client.upsert([dict(id="a", vector=np.ones(D).tolist())])
    cases = [
        (lambda: client.add_images("nope", {"x": np.ones(D).tolist()}), grpc.StatusCode.NOT_FOUND),
        (lambda: client.remove_images("nope", ["x"]), grpc.StatusCode.NOT_FOUND),
        (lambda: client.add_images("a", {}), grpc.StatusCode.INVALID_ARGUMENT),
        (lambda: client.add_images("a", {"": np.ones(D).tolist()}), grpc.StatusCode.INVALID_ARGUMENT),
        (lambda: client.add_images("a", {"x": [1.0] * (D + 1)}), grpc.StatusCode.INVALID_ARGUMENT),
        (lambda: client.add_images("a", {"x": b"not an image"}), grpc.StatusCode.UNIMPLEMENTED),  # no encoder here
        (lambda: client.add_images("a", {f"i{j}": np.ones(D).tolist() for j in range(MAX_IMAGES)}),
         grpc.StatusCode.INVALID_ARGUMENT),
        (lambda: client.remove_images("a", []), grpc.StatusCode.INVALID_ARGUMENT),
        (lambda: client.search(vector=np.ones(D).tolist(), images_per_hit=MAX_IMAGES + 1),
         grpc.StatusCode.INVALID_ARGUMENT),
        (lambda: client.stub.Upsert(pb.UpsertRequest(products=[pb.Product(
            id="b", vector=[1.0] * D, images=[pb.ProductImage(id="x", vector=[1.0] * D)] * 2)])),
         grpc.StatusCode.INVALID_ARGUMENT),
        (lambda: client.stub.Upsert(pb.UpsertRequest(products=[pb.Product(
            id="b", vector=[1.0] * D, images=[pb.ProductImage(id="x")])])), grpc.StatusCode.INVALID_ARGUMENT),
    ]
    for fn, code in cases:
        with pytest.raises(grpc.RpcError) as e:
            fn()
        assert e.value.code() == code, (e.value.code(), e.value.details())
    st = client.stats()
    assert (st["products"], st["images"]) == (1, 1), "nothing refused was stored"


def test_grpc_real_photos_of_several_sides(shipped_repo, tmp_path):
    """Image bytes through the shipped encoder: a product stored as its clean picture plus a
    second view found by a query that looks like the second view; thumbnails per image."""
    import io

    from PIL import Image

    from conftest import serve_articles
    from skulens.client import Client
    from skulens.data import datasets
    from skulens.data.holdout import HoldoutViews

    images, _ = datasets.load("test")
    scan, scan2 = HoldoutViews(images, seed=5)([3])[0], HoldoutViews(images, seed=6)([3])[0]
    server = serve_articles(shipped_repo, str(tmp_path / "data"), 200)
    try:
        with Client(server.target, timeout=60) as c:
            r = c.add_images("t3", {"scan": scan, "scan2": scan2})
            assert (r.images, r.changed) == (3, 2)
            p = c.get("t3", include_thumbnail=True)
            assert [i.id for i in p.images] == ["scan", "scan2"] and all(i.thumbnail for i in p.images)
            Image.open(io.BytesIO(c.thumbnail("t3", "scan2"))).verify()
            for query, name in ((scan, "scan"), (scan2, "scan2")):
                hit = c.search(image=query, top_k=3, min_seq=r.seq)[0]
                assert (hit.product_id, hit.image_id) == ("t3", name) and hit.score > 0.99
            with pytest.raises(grpc.RpcError) as e:
                c.add_images("t3", {"bad": b"\x89PNG not really"})
            assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "image 'bad'" in e.value.details()
            assert [i.id for i in c.get("t3").images] == ["scan", "scan2"]
    finally:
        server.stop()


def test_a_version_2_snapshot_still_loads(tmp_path, caplog):
    """Snapshots written before products had several images (version 2, ids only) are used as
    they are, not rebuilt."""
    import json
    import logging
    import os
    path = str(tmp_path / "cat")
    x, products = catalogue(n=100, extra=0)
    with Catalog.open(path, D) as c:
        c.upsert(products)
        c.wait_indexed(30)
    root = os.path.join(path, "snapshots")
    (snap,) = os.listdir(root)
    manifest = os.path.join(root, snap, "manifest.json")
    m = json.load(open(manifest))
    assert m["version"] == 3
    m["version"] = 2
    json.dump(m, open(manifest, "w"))
    with caplog.at_level(logging.WARNING, logger="skulens.catalog"):
        with Catalog.open(path, D) as c:
            assert c.stats()["hnsw"]["unindexed"] == 0 and c.search(x[4, 0], 1)[0].id == "p4"
            c.add_images("p4", {"back": x[5, 0]})
    assert "unusable" not in caplog.text and "rebuilding" not in caplog.text
    with Catalog.open(path, D) as c:
        hits = {h.id: h for h in c.search(x[5, 0], 2)}       # p5 itself and p4 by its new image tie at 1.0
        assert hits["p4"].image == "back" and hits["p4"].score == pytest.approx(1.0) and "p5" in hits
