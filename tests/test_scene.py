"""SearchScene and SearchSceneStream through the real gRPC server with the shipped encoders: synthetic
shelf scenes (skulens.data.scenes, test-split articles on opencv-doc clutter), the real opencv-doc
photo box_in_scene.png, bad input, filters, and tracks across a stream's frames."""

import io

import grpc
import numpy as np
import pytest
from PIL import Image

from skulens.data import datasets
from skulens.data.holdout import OPENCV_DATA

pytestmark = pytest.mark.skipif(not datasets.available(), reason="apt-get install dataset-fashion-mnist")
N = 2000
PHOTOS = ("box.png", "graf3.png", "chicky_512.png", "pic1.png", "smarties.png", "orange.jpg", "blox.jpg")


@pytest.fixture(scope="module")
def served(tmp_path_factory, shipped_repo):
    from conftest import serve_articles
    photos = [dict(id=p.split(".")[0], title=p, category="photo", image=open(f"{OPENCV_DATA}/{p}", "rb").read())
              for p in PHOTOS]
    s = serve_articles(shipped_repo, str(tmp_path_factory.mktemp("data")), N, photos)
    yield s, datasets.load("test")[0][:N]
    s.stop()


def _client(server):
    from skulens.client import Client
    return Client(server.target, timeout=30)


def _boxes(r):
    return np.array([[g.box.x0, g.box.y0, g.box.x1, g.box.y1] for g in r.regions]).reshape(-1, 4)


def test_shelf_scenes_find_most_articles(served):
    from skulens.data.scenes import SceneMaker, iou
    server, images = served
    maker = SceneMaker(images, seed=11)
    found = total = 0
    with _client(server) as c:
        for k in range(8):
            scene = maker(k)
            r = c.search_scene(scene.jpeg, top_k=10)
            b = _boxes(r)
            assert len(r.regions) <= 10 and r.candidates > 0
            assert (b[:, 0] >= 0).all() and (b[:, 2] <= 640).all() and (b[:, 3] <= 480).all()
            assert (b[:, 2] > b[:, 0]).all() and (b[:, 3] > b[:, 1]).all()
            assert list(np.argsort([-g.objectness for g in r.regions], kind="stable")) == list(range(len(r.regions)))
            t = r.timings
            assert t.propose_us > 0 and t.encode_us > 0 and t.total_us >= t.propose_us + t.encode_us
            for gt, item in zip(scene.boxes, scene.items):
                total += 1
                found += any(iou(gt[None], bb[None])[0, 0] >= 0.5 and f"t{item}" in [h.product_id for h in g.hits]
                             for g, bb in zip(r.regions, b))
    assert found / total >= 0.5, f"{found} of {total} articles found"    # bench/scene_eval.py: ~0.7 at 2k


def test_the_box_in_the_real_scene(served):
    server, _ = served
    with _client(server) as c:
        r = c.search_scene(open(f"{OPENCV_DATA}/box_in_scene.png", "rb").read(), top_k=3, max_regions=32,
                           min_objectness=-1.0, include_metadata=True)
    where = [g for g in r.regions if "box" in [h.product_id for h in g.hits]]
    assert where, "box.png is in no region's top 3"
    g = where[0]
    assert g.hits[[h.product_id for h in g.hits].index("box")].title == "box.png"
    # The box lies in the left half of the 512 x 384 picture, around (100..250, 150..290).
    assert g.box.x0 < 200 and g.box.x1 > 150 and g.box.y0 < 250 and g.box.y1 > 200


def test_filters_apply_to_every_region(served):
    from skulens.data.scenes import SceneMaker
    server, images = served
    with _client(server) as c:
        r = c.search_scene(SceneMaker(images, seed=5)(0).jpeg, top_k=5, filters="category=boots",
                           include_metadata=True, min_objectness=-1.0)
    assert r.regions and all(h.category == "boots" for g in r.regions for h in g.hits)


def test_bad_scene_requests_are_invalid_argument(served):
    server, _ = served
    png = io.BytesIO()
    Image.new("RGB", (64, 48), "grey").save(png, "PNG")
    with _client(server) as c:
        for kw in (dict(image=b""), dict(image=b"not an image"), dict(image=png.getvalue(), max_regions=33),
                   dict(image=png.getvalue(), top_k=-1), dict(image=png.getvalue(), min_objectness=float("nan")),
                   dict(image=png.getvalue(), min_objectness=2.0)):
            with pytest.raises(grpc.RpcError) as e:
                c.search_scene(**kw)
            assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT, kw
        r = c.search_scene(png.getvalue())          # a blank picture: an answer, maybe with no region
        assert r.candidates >= 0


def test_a_stream_keeps_each_region_on_its_track(served):
    from skulens.data.scenes import SceneMaker
    server, images = served
    jpeg = SceneMaker(images, seed=7)(1).jpeg
    with _client(server) as c:
        frames = list(c.search_scene_stream([jpeg] * 4, top_k=5))
    assert len(frames) == 4
    first = {g.track: (g.box.x0, g.box.y0) for g in frames[0].regions}
    last = frames[-1].regions
    assert last and all(g.track in first for g in last)          # the same scene: the same tracks
    assert any(g.stable and g.stable_product_id == g.hits[0].product_id for g in last)
    assert all(g.fused for g in last)
