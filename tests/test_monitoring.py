"""Prometheus metrics scraped over real HTTP from a real server, and the drift gauges crossing
their alert threshold when the queries change (inverted images)."""

import io
import urllib.request

import grpc
import numpy as np
import pytest
import skimage.data as sd
from PIL import Image, ImageOps
from prometheus_client.parser import text_string_to_metric_families

import onnx_models
from skulens import encode
from skulens.client import Client
from skulens.monitoring.drift import Drift
from skulens.security.keys import KeyStore
from skulens.server import Config, Server

ALERT_COSINE = 0.9   # deploy/prometheus/skulens-rules.yml: SkulensQueryDrift


def scrape(port: int) -> dict:
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    out = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def jpeg(im: Image.Image) -> bytes:
    buf = io.BytesIO()
    im.save(buf, "JPEG", quality=90)
    return buf.getvalue()


def crops(n: int, seed: int, invert: bool = False):
    """n scanner-like crops of one real photo (the same scene, other framings)."""
    photo = Image.fromarray(sd.coffee())
    rng = np.random.default_rng(seed)
    for _ in range(n):
        x, y = rng.integers(0, 200), rng.integers(0, 100)
        im = photo.crop((x, y, x + 300, y + 300))
        yield jpeg(ImageOps.invert(im) if invert else im)


@pytest.fixture(params=["sync", "aio"])
def server(tmp_path, request):
    repo = tmp_path / "repo"
    onnx_models.tiny_image_encoder(str(repo))
    encs = encode.load(str(repo))
    store = KeyStore(str(tmp_path / "keys.json"))
    _, key = store.add("write")
    s = Server(Config(data=str(tmp_path / "c"), dim=encs["image"].dim, port=0, metrics_port=0, drift_window=40,
                      keys=store.path, server=request.param), encoders=encs)
    yield s, key
    s.stop()


def test_metrics_count_calls_stages_batches_commits_and_auth_failures(server):
    s, key = server
    with Client(s.target, api_key=key) as c:
        c.upsert([dict(id=f"p{i}", image=img) for i, img in enumerate(crops(12, 0))])
        for img in crops(5, 1):
            c.search(image=img, top_k=3)
        with pytest.raises(grpc.RpcError):
            c.search(vector=[1.0, 2.0], top_k=3)        # wrong size: INVALID_ARGUMENT
    with Client(s.target) as c:
        with pytest.raises(grpc.RpcError):
            c.stats()                                    # no key
    m = scrape(s.metrics_port)
    assert m[("skulens_requests_total", (("code", "OK"), ("method", "Search")))] == 5
    assert m[("skulens_requests_total", (("code", "INVALID_ARGUMENT"), ("method", "Search")))] == 1
    assert m[("skulens_requests_total", (("code", "OK"), ("method", "Upsert")))] == 1
    assert m[("skulens_request_seconds_count", (("method", "Search"),))] == 6
    for stage in ("decode", "preprocess", "encode", "search"):
        assert m[("skulens_stage_seconds_count", (("stage", stage),))] == 5
    assert m[("skulens_encoder_batch_size_sum", ())] == 12 and m[("skulens_encoder_batch_size_count", ())] == 1
    assert m[("skulens_sqlite_commit_seconds_count", ())] >= 1
    assert m[("skulens_auth_failures_total", (("reason", "missing"),))] == 1
    assert m[("skulens_catalog_products", ())] == 12 and m[("skulens_in_flight_requests", ())] == 0
    assert 0 <= m[("skulens_query_cache_hit_ratio", ())] <= 1 and ("skulens_graph_backlog", ()) in m


def test_drift_gauges_cross_the_alert_threshold_when_queries_change(server):
    s, key = server
    with Client(s.target, api_key=key) as c:
        c.upsert([dict(id=f"p{i}", image=img) for i, img in enumerate(crops(30, 0))])
        for img in crops(40, 1):                                       # the reference window
            c.search(image=img, top_k=1)
        assert scrape(s.metrics_port)[("skulens_drift_reference_ready", ())] == 1
        for img in crops(40, 2):                                       # more of the same
            c.search(image=img, top_k=1)
        same = scrape(s.metrics_port)
        assert same[("skulens_drift_mean_cosine", ())] > ALERT_COSINE
        for img in crops(40, 3, invert=True):                          # the scanner's images go negative
            c.search(image=img, top_k=1)
        shifted = scrape(s.metrics_port)
    assert shifted[("skulens_drift_mean_cosine", ())] < ALERT_COSINE
    assert shifted[("skulens_drift_mean_shift", ())] > same[("skulens_drift_mean_shift", ())]
    assert shifted[("skulens_drift_top1_mean", ())] < shifted[("skulens_drift_reference_top1_mean", ())]


def test_drift_memory_is_two_windows():
    d = Drift(window=10)
    rng = np.random.default_rng(0)
    for _ in range(1000):
        d.observe(rng.standard_normal(8), 0.5)
    d.values()  # folds what is pending
    assert d._ring.shape == (10, 8) and d._filled == 10 and len(d._scores) == 10 and d._ref_vecs == [] and not d._pending
    v = d.values()
    assert v["reference_ready"] == 1 and -1 <= v["mean_cosine"] <= 1 and v["top1_mean"] == 0.5


def test_alert_rules_and_dashboard_use_only_exported_metrics(server):
    import json
    import os
    import re
    import yaml
    s, key = server
    with Client(s.target, api_key=key) as c:
        c.upsert([dict(id="p", image=next(crops(1, 0)))])
        c.search(image=next(crops(1, 1)), top_k=1)
    exported = {name for name, _ in scrape(s.metrics_port)}
    root = os.path.join(os.path.dirname(__file__), "..", "deploy")
    rules = yaml.safe_load(open(os.path.join(root, "prometheus", "skulens-rules.yml")))
    exprs = [r["expr"] for g in rules["groups"] for r in g["rules"]]
    dash = json.load(open(os.path.join(root, "grafana", "skulens.json")))
    exprs += [t["expr"] for p in dash["panels"] for t in p["targets"]]
    used = {m for e in exprs for m in re.findall(r"skulens_[a-z0-9_]+", e)}
    assert used and used <= exported, used - exported


def test_drift_batches_agree_with_the_plain_computation():
    """Queries are folded in batches; the gauges are those of the first `window` queries against
    the latest `window`, whatever the batch boundaries (zero vectors are skipped)."""
    d = Drift(window=50)
    rng = np.random.default_rng(1)
    vs = rng.standard_normal((137, 6)) + np.linspace(0, 3, 137)[:, None]
    vs[60] = 0
    for i, v in enumerate(vs):
        d.observe(v.astype(np.float32), float(i))
    got = d.values()
    kept = [i for i in range(137) if i != 60]
    unit = vs / np.maximum(np.linalg.norm(vs, axis=1, keepdims=True), 1e-300)
    ref, cur = unit[kept[:50]].mean(axis=0), unit[kept[-50:]].mean(axis=0)
    assert got["mean_cosine"] == pytest.approx(cur @ ref / np.linalg.norm(cur) / np.linalg.norm(ref), abs=1e-6)
    assert got["mean_shift"] == pytest.approx(np.linalg.norm(cur - ref), abs=1e-6)
    assert got["top1_mean"] == pytest.approx(np.mean(kept[-50:]))
    assert got["reference_top1_mean"] == pytest.approx(np.mean(kept[:50]))
