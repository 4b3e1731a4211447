"""The catalogue's contract: products in and out, search modes agree with an
exact oracle, filters return k whenever k match, slot reuse, bad input."""

import numpy as np
import pytest

from skulens.catalog import Catalog, Hit, Product
from skulens.errors import InvalidArgument, NotFound, SkulensError, Unavailable
from synthetic import clustered

D = 32


def products(x, start=0, cats=5):
    return [dict(id=f"p{i}", sku=f"SKU-{i}", title=f"title {i}", category=f"c{i % cats}",
                 attributes={"color": ("red", "blue", "green")[i % 3]}, vector=x[i - start])
            for i in range(start, start + len(x))]


@pytest.fixture
def cat(tmp_path):
    # Small thresholds so auto mode reaches HNSW on a test-sized catalogue.
    with Catalog.open(tmp_path / "cat", D, exact_below=500, exact_filtered_below=200) as c:
        yield c


def oracle(x, ids, q, k, keep=None):
    s = x.astype(np.float64) @ (q / np.linalg.norm(q))
    order = [i for i in np.argsort(-s, kind="stable") if keep is None or keep[i]][:k]
    return [ids[i] for i in order], s[order]


def test_round_trip_and_reopen(tmp_path):
    x = clustered(50, D, seed=1)
    with Catalog.open(tmp_path / "c", D) as c:
        c.upsert(products(x[:49]))
        c.upsert(Product("p49", sku="S", title="T", category="c", attributes={"a": "b"}, vector=x[49] * 3,
                         text_vector=x[0], thumbnail=b"\x89PNG..."))
        p = c.get("p49")
        assert (p.sku, p.title, p.category, p.attributes) == ("S", "T", "c", {"a": "b"})
        np.testing.assert_allclose(p.vector, x[49], atol=1e-6)  # stored unit-length
        np.testing.assert_allclose(p.text_vector, x[0], atol=1e-6)
        assert p.created == p.updated and c.thumbnail("p49") == b"\x89PNG..."
        assert c.get("nope") is None and "p3" in c and len(c) == 50
        created = p.created
    with Catalog.open(tmp_path / "c", D) as c:
        assert len(c) == 50
        c.upsert([dict(id="p49", title="T2", vector=x[1])])
        p = c.get("p49")
        assert p.title == "T2" and p.created == created and p.updated > created
        assert c.search(x[1], 2)[0].score == pytest.approx(1.0, abs=1e-5)
    with pytest.raises(InvalidArgument, match="32-d"):
        Catalog.open(tmp_path / "c", 64)


def test_second_open_of_the_same_folder_is_refused(tmp_path):
    with Catalog.open(tmp_path / "c", D):
        with pytest.raises(Unavailable, match="another process"):
            Catalog.open(tmp_path / "c", D)


@pytest.mark.parametrize("mode", ["exact", "ann", "auto"])
def test_modes_against_exact_oracle(cat, mode):
    x, q = clustered(3000, D, seed=1), clustered(40, D, seed=2)
    cat.upsert(products(x))
    ids = [f"p{i}" for i in range(3000)]
    rec = []
    for qq in q:
        hits = cat.search(qq, 10, mode=mode)
        want, ws = oracle(x, ids, qq, 10)
        assert len(hits) == 10
        assert all(isinstance(h, Hit) for h in hits)
        assert all(a.score >= b.score for a, b in zip(hits, hits[1:]))
        if mode == "exact":
            np.testing.assert_allclose([h.score for h in hits], ws, atol=1e-5)
            assert [h.id for h in hits] == want or np.ptp(ws) < 1e-5
        rec.append(len({h.id for h in hits} & set(want)) / 10)
    assert np.mean(rec) >= (1.0 if mode == "exact" else 0.97)
    s = cat.stats()["searches"]
    assert s["exact" if mode == "exact" else "ann" if mode == "ann" else "auto_ann"] == 40


def test_auto_rescores_with_the_kernel(cat):
    x = clustered(2000, D, seed=1)
    cat.upsert(products(x))
    q = clustered(1, D, seed=9)[0]
    auto = cat.search(q, 5, mode="auto")
    exact = {h.id: h.score for h in cat.search(q, 50, mode="exact")}
    for h in auto:
        assert h.score == exact[h.id]  # bit-identical: the same kernel scored both


@pytest.mark.parametrize("mode", ["exact", "ann", "auto"])
@pytest.mark.parametrize("filt,keep", [
    ("category=c1", lambda i: i % 5 == 1),
    ({"category": ["c1", "c2"], "color": "red"}, lambda i: i % 5 in (1, 2) and i % 3 == 0),
    ("color=green AND category=c4", lambda i: i % 3 == 2 and i % 5 == 4),
])
def test_filters_return_k_whenever_k_match(cat, mode, filt, keep):
    x = clustered(3000, D, seed=1)
    cat.upsert(products(x))
    mask = np.array([keep(i) for i in range(3000)])
    ids = [f"p{i}" for i in range(3000)]
    for qq in clustered(10, D, seed=3):
        hits = cat.search(qq, 20, filters=filt, mode=mode)
        assert len(hits) == 20
        assert all(mask[int(h.id[1:])] for h in hits)
        want, _ = oracle(x, ids, qq, 20, keep=mask)
        assert len({h.id for h in hits} & set(want)) >= (20 if mode == "exact" else 17)


def test_tiny_filter_in_ann_mode_still_gives_every_match(cat):
    x = clustered(3000, D, seed=1)
    ps = products(x)
    ps[7]["attributes"] = {"color": "rare"}
    ps[2500]["attributes"] = {"color": "rare"}
    cat.upsert(ps)
    for mode in ("ann", "auto", "exact"):
        hits = cat.search(x[0], 10, filters="color=rare", mode=mode)
        assert sorted(h.id for h in hits) == ["p2500", "p7"]
    assert cat.search(x[0], 10, filters="color=none") == []


def test_read_your_writes_and_deletes(cat):
    x = clustered(1000, D, seed=1)
    cat.upsert(products(x))
    v = clustered(1, D, seed=77)[0]
    cat.upsert([dict(id="p5", category="c0", vector=v)])
    for mode in ("exact", "ann", "auto"):
        assert cat.search(v, 1, mode=mode)[0].id == "p5"
    assert cat.search(v, 1, filters="category=c0")[0].id == "p5"
    assert not any(h.id == "p5" for h in cat.search(v, 50, filters="color=blue", mode="exact"))
    assert cat.delete(["p5", "p6", "missing"]) == 2
    for mode in ("exact", "ann", "auto"):
        assert all(h.id not in ("p5", "p6") for h in cat.search(v, 50, mode=mode))
    assert cat.get("p5") is None and len(cat) == 998
    assert cat.delete(["p5"]) == 0


def test_churn_reuses_slots_so_memory_stays_flat(cat):
    x = clustered(1000, D, seed=1)
    cat.upsert(products(x))
    st0 = cat.stats()
    rng = np.random.default_rng(0)
    live = [f"p{i}" for i in range(1000)]
    for rnd in range(20):
        rng.shuffle(live)
        gone, live = live[:100], live[100:]
        assert cat.delete(gone) == 100
        fresh = clustered(100, D, seed=100 + rnd)
        cat.upsert([dict(id=f"n{rnd}_{j}", vector=fresh[j]) for j in range(100)])
        live += [f"n{rnd}_{j}" for j in range(100)]
    assert cat.wait_indexed(60)
    st = cat.stats()
    assert st["products"] == 1000 and st["slots"] == st0["slots"] == 1000
    assert st["hnsw"]["capacity"] == st0["hnsw"]["capacity"]
    assert st["hnsw"]["deleted"] == 0 and st["hnsw"]["unindexed"] == 0
    assert cat.search(fresh[3], 1, mode="ann")[0].id == "n19_3"


def test_empty_and_small_catalogues(cat):
    q = np.ones(D)
    for mode in ("exact", "ann", "auto"):
        assert cat.search(q, 5, mode=mode) == []
    cat.upsert([dict(id="a", vector=q), dict(id="b", vector=-q)])
    for mode in ("exact", "ann", "auto"):
        assert [h.id for h in cat.search(q, 5, mode=mode)] == ["a", "b"]


@pytest.mark.parametrize("bad,match", [
    (dict(id="", vector=np.ones(D)), "non-empty"),
    (dict(id="x" * 257, vector=np.ones(D)), "256 bytes"),
    (dict(id=3, vector=np.ones(D)), "non-empty string"),
    (dict(id="a"), "no vector"),
    (dict(id="a", vector=np.ones(D + 1)), "shape"),
    (dict(id="a", vector=np.zeros(D)), "zero"),
    (dict(id="a", vector=np.full(D, np.nan)), "NaN"),
    (dict(id="a", vector=["x"] * D), "numeric"),
    (dict(id="a", vector=np.ones(D), attributes={"k": 1}), "attribute"),
    (dict(id="a", vector=np.ones(D), attributes={"category": "x"}), "product field"),
    (dict(id="a", vector=np.ones(D), title=5), "title"),
    (dict(id="a", vector=np.ones(D), colour="red"), "unknown product field"),
    (dict(id="a", vector=np.ones(D), text_vector=np.ones(3)), "text_vector"),
    ("just a string", "Product or a dict"),
])
def test_bad_products_change_nothing(cat, bad, match):
    cat.upsert([dict(id="keep", vector=np.ones(D))])
    seq = cat.stats()["seq"]
    with pytest.raises(InvalidArgument, match=match):
        cat.upsert([dict(id="good", vector=np.ones(D)), bad])
    assert cat.get("good") is None and len(cat) == 1 and cat.stats()["seq"] == seq
    assert isinstance(InvalidArgument("x"), (ValueError, SkulensError))


def test_duplicate_ids_in_one_batch(cat):
    with pytest.raises(InvalidArgument, match="twice"):
        cat.upsert([dict(id="a", vector=np.ones(D)), dict(id="a", vector=np.ones(D))])


@pytest.mark.parametrize("kw,match", [
    (dict(k=0), "k must"), (dict(k=10_001), "k must"), (dict(k=2.5), "k must"),
    (dict(mode="fast"), "mode"), (dict(ef=0), "ef"), (dict(filters="nokey"), "key=value"),
    (dict(vector=np.ones(5)), "shape"), (dict(vector=[np.inf] * D), "NaN or Inf"),
])
def test_bad_searches(cat, kw, match):
    cat.upsert([dict(id="a", vector=np.ones(D))])
    args = dict(vector=np.ones(D), k=3)
    args.update(kw)
    with pytest.raises(InvalidArgument, match=match):
        cat.search(args.pop("vector"), **args)


def test_closed_catalogue_is_unavailable(tmp_path):
    c = Catalog.open(tmp_path / "c", D)
    c.close()
    c.close()  # twice is fine
    with pytest.raises(Unavailable):
        c.search(np.ones(D), 1)
    with pytest.raises(Unavailable):
        c.upsert([dict(id="a", vector=np.ones(D))])
    assert issubclass(NotFound, KeyError)


def test_products_the_graph_lacks_yet_are_searched_exactly(cat):
    """Writes are acknowledged before the background indexer adds them to the
    graph; until then ann/auto scan them exactly, and stale graph versions are hidden."""
    x = clustered(2000, D, seed=1)
    cat.upsert(products(x))
    assert cat.wait_indexed(60)
    new = clustered(600, D, seed=4)
    with cat._indexer.mutex:  # fault injection: the indexer is stalled
        cat.upsert([dict(id=f"n{i}", category="c9", vector=new[i]) for i in range(500)])
        cat.upsert([dict(id=f"p{i}", category="c9", vector=new[500 + i]) for i in range(100)])  # updates
        assert cat.stats()["hnsw"]["unindexed"] == 600
        for mode in ("ann", "auto"):
            for i in (0, 250, 499):
                top = cat.search(new[i], 1, mode=mode)[0]
                assert top.id == f"n{i}" and top.score == pytest.approx(1.0, abs=1e-5)
            for i in (0, 50, 99):
                assert cat.search(new[500 + i], 1, mode=mode)[0].id == f"p{i}"
                # the old vector of p{i} must not score as before: its graph entry is hidden
                assert all(h.id != f"p{i}" or h.score < 0.999 for h in cat.search(x[i], 5, mode=mode))
            hits = cat.search(new[3], 50, filters="category=c9", mode=mode)
            assert len(hits) == 50 and all(h.id.startswith("n") or int(h.id[1:]) < 100 for h in hits)
    assert cat.wait_indexed(60)
    assert cat.stats()["hnsw"]["unindexed"] == 0
    assert cat.search(new[7], 1, mode="ann")[0].id == "n7"


def test_concurrent_writers_share_commits(cat):
    """Group commit: writes queued while one commits go together in the next
    transaction, so 8 threads x 40 single upserts take far fewer than 320 fsyncs."""
    import threading
    x = clustered(320, D, seed=6)
    seq0 = cat.stats()["seq"]
    errors = []

    def writer(t):
        try:
            for j in range(40):
                i = t * 40 + j
                seq = cat.upsert([dict(id=f"g{i}", vector=x[i])])
                hit = cat.search(x[i], 1, mode="exact")[0]  # acknowledged = visible
                assert hit.id == f"g{i}" and seq > seq0
                if j % 10 == 9:
                    assert cat.delete([f"g{i}"]) == 1 and cat.get(f"g{i}") is None
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append(e)

    threads = [threading.Thread(target=writer, args=(t,)) for t in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    assert len(cat) == 320 - 32
    transactions = cat.stats()["seq"] - seq0
    assert transactions < 320 + 32  # fewer commits than writes: some were grouped
    for i in range(320):
        p = cat.get(f"g{i}")
        assert (p is None) == (i % 40 % 10 == 9)
        if p is not None:
            np.testing.assert_allclose(p.vector, x[i], atol=1e-6)


def test_a_failed_commit_acknowledges_nothing(cat, monkeypatch):
    cat.upsert([dict(id="a", vector=np.ones(D))])

    def boom(ops, seq):
        raise OSError("disk full (injected)")
    monkeypatch.setattr(cat._store, "write", boom)
    with pytest.raises(OSError, match="disk full"):
        cat.upsert([dict(id="b", vector=np.ones(D))])
    with pytest.raises(OSError):
        cat.delete(["a"])
    monkeypatch.undo()
    assert "b" not in cat and cat.get("b") is None and "a" in cat
    assert cat.search(np.ones(D), 5, mode="exact")[0].id == "a" and len(cat.search(np.ones(D), 5)) == 1
    cat.upsert([dict(id="b", vector=np.ones(D))])  # and the free slot is reused
    assert cat.stats()["slots"] == 2


@pytest.mark.parametrize("storage", ["fp16", "int8"])
def test_compressed_kernel_storage(tmp_path, storage):
    x, q = clustered(3000, D, seed=1), clustered(30, D, seed=2)
    with Catalog.open(tmp_path / "c", D, storage=storage, exact_below=500) as c:
        c.upsert(products(x))
        ids = [f"p{i}" for i in range(3000)]
        for mode in ("exact", "auto"):
            rec = np.mean([len({h.id for h in c.search(qq, 10, mode=mode)} & set(oracle(x, ids, qq, 10)[0])) / 10
                           for qq in q])
            assert rec >= 0.95, (mode, rec)
        assert c.stats()["storage"] == storage
    with Catalog.open(tmp_path / "c", D, storage=storage) as c:  # restored from its snapshot
        assert c.search(x[11], 1, mode="exact")[0].id == "p11"


def test_title_embeddings_get_their_own_exact_index(tmp_path):
    x, t = clustered(300, D, seed=1), clustered(300, 24, seed=2)
    with Catalog.open(tmp_path / "c", D, text_dim=24) as c:
        c.upsert([dict(id=f"p{i}", category=f"c{i % 3}", vector=x[i], text_vector=t[i] if i % 10 else None)
                  for i in range(300)])
        assert c.search(t[7], 1, field="text")[0].id == "p7"
        hits = c.search(t[7], 50, field="text", filters="category=c2")
        assert len(hits) == 50 and all(int(h.id[1:]) % 3 == 2 and int(h.id[1:]) % 10 for h in hits)
        assert all(int(h.id[1:]) % 10 for h in c.search(t[0], 300, field="text"))  # no title vector, not found
        c.upsert([dict(id="p7", vector=x[7])])  # the new version has no title vector
        assert c.search(t[7], 1, field="text")[0].id != "p7"
        c.delete(["p8"])
        assert all(h.id != "p8" for h in c.search(t[8], 5, field="text"))
        with pytest.raises(InvalidArgument, match="shape"):
            c.upsert([dict(id="bad", vector=x[0], text_vector=np.ones(D))])
    with Catalog.open(tmp_path / "c", D, text_dim=24) as c:  # rebuilt from SQLite on open
        assert c.search(t[9], 1, field="text")[0].id == "p9"
    with Catalog.open(tmp_path / "c", D) as c:
        with pytest.raises(InvalidArgument, match="text_dim"):
            c.search(t[9], 1, field="text")
