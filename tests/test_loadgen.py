"""The load generator against a real server: counts, rate, ghz's report fields."""

import json

from skulens import cli
from skulens.server import Config, Server


def test_loadgen_report(tmp_path, capsys):
    s = Server(Config(data=str(tmp_path / "d"), dim=4, port=0))
    try:
        from skulens.client import Client
        with Client(s.target) as c:
            c.upsert([dict(id=f"p{i}", vector=[1.0, i, 0.5, -i]) for i in range(50)])
        req = tmp_path / "req.json"
        req.write_text(json.dumps({"query": {"vector": {"values": [1, 2, 3, 4]}}, "topK": 5}))
        out = tmp_path / "r.json"
        assert cli.main(["--target", s.target, "loadgen", "-d", f"@{req}", "-c", "4", "-n", "120",
                         "--connections", "2", "-o", str(out)]) == 0
        r = json.loads(out.read_text())
        assert r["count"] == 120 and r["statusCodeDistribution"] == {"OK": 120} and not r["errorDistribution"]
        assert 0 < r["fastest"] <= r["average"] <= r["slowest"] and r["total"] > 0 and r["rps"] > 0
        assert [d["percentage"] for d in r["latencyDistribution"]] == [10, 25, 50, 75, 90, 95, 99]
        assert sum(h["count"] for h in r["histogram"]) == 120
        assert "Requests/sec" in capsys.readouterr().out
        # A constant rate: 40 requests at 200/s take about 0.2 s.
        assert cli.main(["--target", s.target, "loadgen", "-d", f"@{req}", "-c", "4", "-n", "40", "--rps", "200",
                         "-o", str(out)]) == 0
        r = json.loads(out.read_text())
        assert r["count"] == 40 and 0.17e9 < r["total"] < 1.0e9
        # Errors are counted by code, as ghz does.
        bad = json.dumps({"query": {"vector": {"values": [1, 2]}}})
        assert cli.main(["--target", s.target, "loadgen", "-d", bad, "-n", "10", "-o", str(out)]) == 0
        r = json.loads(out.read_text())
        assert r["statusCodeDistribution"] == {"INVALID_ARGUMENT": 10} and sum(r["errorDistribution"].values()) == 10
    finally:
        s.stop()
