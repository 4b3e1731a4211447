"""Fusing a scanner's frames: unit behaviour, then SearchStream over loopback."""

import grpc
import numpy as np
import pytest

from skulens.client import Client
from skulens.fusion import Fusion
from skulens.server import Config, Server
from synthetic import clustered


def test_stable_after_consistent_frames_and_reset_on_switch():
    f = Fusion(window=4, stable_after=3, min_margin=0.02)
    assert not f.add({"a": 0.90, "b": 0.80})[1]
    assert not f.add({"a": 0.85, "b": 0.84})[1]
    fused, stable, leader, conf = f.add({"a": 0.88, "c": 0.70})
    assert stable and leader == "a" and conf > 0.02 and fused[0][0] == "a"
    # b missing from frame 3 counts with that frame's floor (0.70), not zero
    assert dict(fused)["b"] == pytest.approx((0.80 + 0.84 + 0.70) / 3)
    for _ in range(4):  # the scanner moves to another product
        fused, stable, leader, _ = f.add({"z": 0.95, "a": 0.60})
    assert leader == "z" and stable


def test_a_close_race_is_never_stable():
    f = Fusion(window=3, stable_after=2, min_margin=0.05)
    for i in range(10):
        _, stable, _, conf = f.add({"a": 0.80 + 0.01 * (i % 2), "b": 0.80})
        assert not stable and conf < 0.05


def test_search_stream_over_grpc(tmp_path):
    s = Server(Config(data=str(tmp_path / "d"), dim=16, port=0))
    try:
        with Client(s.target) as c:
            x = clustered(200, 16, seed=1)
            c.upsert([dict(id=f"p{i}", vector=x[i]) for i in range(200)])
            rng = np.random.default_rng(0)
            # Noisy views of p5: some frames alone would answer wrongly
            frames = [dict(vector=x[5] + 0.25 * rng.standard_normal(16) / 4, top_k=5) for _ in range(8)]
            out = list(c.search_stream(frames))
            assert [o.frame for o in out] == list(range(8))
            assert out[-1].stable and out[-1].stable_product_id == "p5" and out[-1].fused[0].product_id == "p5"
            assert not out[0].stable and all(len(o.hits) == 5 for o in out)
            with pytest.raises(grpc.RpcError) as e:
                list(c.search_stream([dict(vector=x[1]), dict(vector=[1.0] * 3)]))
            assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "frame 1" in e.value.details()
    finally:
        s.stop()
