"""Searches, upserts, deletes and snapshots from many threads at once for 30 s
(SKULENS_STRESS_SECONDS), every answer checked against an oracle.

hnswlib must not change while a search walks it; the catalogue's reader-writer
lock is what makes this pass (without it this test crashes the process).
"""

import os
import threading

import numpy as np

from skulens.catalog import Catalog
from synthetic import clustered

D = 32
SECONDS = float(os.environ.get("SKULENS_STRESS_SECONDS", "30"))
STABLE = 2000
WRITERS, READERS, OWN = 3, 3, 150


def test_mixed_load_against_oracle(tmp_path):
    xs = clustered(STABLE, D, seed=1)
    history: dict[str, list[np.ndarray]] = {}  # every vector an id ever had
    errors: list[str] = []
    counts = {"search": 0, "upsert": 0, "delete": 0, "snapshot": 0}
    recalls: list[float] = []
    stop = threading.Event()
    path = tmp_path / "c"
    final: dict[str, np.ndarray] = {}

    with Catalog.open(path, D, exact_below=500, exact_filtered_below=500, snapshot_every=400) as cat:
        cat.upsert([dict(id=f"s{i}", category="stable", vector=xs[i]) for i in range(STABLE)])
        for i in range(STABLE):
            history[f"s{i}"] = [xs[i]]

        def fail(msg):
            errors.append(msg)
            stop.set()

        def reader(seed):
            rng = np.random.default_rng(seed)
            while not stop.is_set():
                q = clustered(1, D, seed=int(rng.integers(1 << 30)))[0]
                mode = ("exact", "ann", "auto")[rng.integers(3)]
                filt = (None, "category=stable", "category=churn")[rng.integers(3)]
                hits = cat.search(q, 10, filters=filt, mode=mode)
                counts["search"] += 1
                ids = [h.id for h in hits]
                sc = np.array([h.score for h in hits])
                if len(set(ids)) != len(ids) or (np.diff(sc) > 1e-6).any():
                    return fail(f"unsorted or repeated hits {ids}")
                if filt != "category=churn" and len(hits) != 10:
                    return fail(f"{len(hits)} hits where >= {STABLE} products match ({mode}, {filt})")
                for h in hits:
                    # Each score is the query against a vector this id really had: nothing torn.
                    if not any(abs(float(v @ q) - h.score) < 1e-4 for v in history.get(h.id, [])):
                        return fail(f"{h.id} scored {h.score}, matching none of its versions ({mode})")
                    if filt == "category=stable" and not h.id.startswith("s"):
                        return fail(f"filter leak: {h.id}")
                    if filt == "category=churn" and not h.id.startswith("w"):
                        return fail(f"filter leak: {h.id}")
                if filt == "category=stable":
                    want = np.argsort(-(xs @ q), kind="stable")[:10]
                    if mode == "exact":
                        if not np.allclose(sc, (xs @ q)[want], atol=1e-5):
                            return fail(f"exact scores differ from the oracle: {sc} vs {(xs @ q)[want]}")
                    else:
                        recalls.append(len(set(ids) & {f"s{i}" for i in want}) / 10)

        def writer(w):
            rng = np.random.default_rng(100 + w)
            mine = [f"w{w}_{i}" for i in range(OWN)]
            while not stop.is_set():
                pid = mine[rng.integers(OWN)]
                if rng.random() < 0.7 or pid not in final:
                    batch = [pid] + [m for m in rng.choice(mine, int(rng.integers(0, 8))) if m != pid]
                    batch = list(dict.fromkeys(batch))
                    vecs = clustered(len(batch), D, seed=int(rng.integers(1 << 30)), spread=2.0)
                    for b, v in zip(batch, vecs):
                        history.setdefault(b, []).append(v)
                    cat.upsert([dict(id=b, category="churn", vector=v) for b, v in zip(batch, vecs)])
                    final.update(zip(batch, vecs))
                    counts["upsert"] += 1
                    # Read-your-writes, in every mode.
                    for mode in ("exact", "ann", "auto"):
                        top = cat.search(vecs[0], 1, mode=mode)
                        if not top or top[0].id != pid or top[0].score < 0.9999:
                            return fail(f"{mode}: own write {pid} not found first: {top}")
                    if not np.allclose(cat.get(pid).vector, vecs[0], atol=1e-6):
                        return fail(f"get({pid}) returned another vector")
                else:
                    last = final.pop(pid)
                    if cat.delete([pid]) != 1:
                        return fail(f"delete of live {pid} reported nothing")
                    counts["delete"] += 1
                    if cat.get(pid) is not None:
                        return fail(f"{pid} still there after delete")
                    if any(h.id == pid for h in cat.search(last, 5, mode="exact")):
                        return fail(f"deleted {pid} still found")

        def snapshotter():
            while not stop.wait(2.0):
                cat.checkpoint()
                counts["snapshot"] += 1

        def guard(fn, *a):
            def run():
                try:
                    fn(*a)
                except Exception as e:  # noqa: BLE001 - any exception is a failure
                    fail(f"{fn.__name__}: {type(e).__name__}: {e}")
            return threading.Thread(target=run)

        threads = ([guard(reader, i) for i in range(READERS)] + [guard(writer, i) for i in range(WRITERS)]
                   + [guard(snapshotter)])
        for t in threads:
            t.start()
        stop.wait(SECONDS)
        stop.set()
        for t in threads:
            t.join()
        assert not errors, errors[:5]
        assert counts["search"] > 100 and counts["upsert"] > 50 and counts["delete"] > 10, counts
        assert np.mean(recalls) >= 0.95
        assert len(cat) == STABLE + len(final)

    # What the writers left is exactly what comes back after a restart.
    with Catalog.open(path, D) as cat:
        assert len(cat) == STABLE + len(final)
        got = cat.get_many(list(final))
        for pid, v in final.items():
            np.testing.assert_allclose(got[pid].vector, v, atol=1e-6)
