"""The soak benchmark's CI version: 60 s of mixed search/upsert/delete through `skulens loadgen`
with auth and metrics on; no call fails and the server's RSS grows by at most 5% after warm-up.
The 10-minute run is `python bench/soak.py --duration 600` (bench/RESULTS.md)."""

import json
import os
import subprocess
import sys

HERE = os.path.dirname(__file__)


def test_a_minute_of_mixed_load_has_no_errors_and_flat_memory(tmp_path):
    out = tmp_path / "soak.json"
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    r = subprocess.run([sys.executable, os.path.join(HERE, "..", "bench", "soak.py"), "--duration", "60",
                        "--products", "5000", "--out", str(out)], env=env, capture_output=True, text=True,
                       timeout=300)
    report = json.loads(out.read_text())
    assert r.returncode == 0, (r.stdout[-2000:], r.stderr[-2000:])
    assert not any(report["errors"].values()) and report["rss_growth"] <= 0.05
    assert report["calls"]["search"] > 1000 and report["calls"]["upsert"] > 100 and report["calls"]["delete"] > 100
