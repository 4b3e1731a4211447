"""The `skulens` command against a real server: ingest a folder + JSONL
(resumable), search with a contact sheet, stats."""

import json

import numpy as np
import pytest
from PIL import Image

import onnx_models
from skulens import cli
from skulens import encode as encoders
from skulens.server import Config, Server


@pytest.fixture
def served(tmp_path):
    repo = tmp_path / "repo"
    onnx_models.tiny_image_encoder(str(repo))
    encs = encoders.load(str(repo))
    s = Server(Config(data=str(tmp_path / "data"), dim=encs["image"].dim, port=0), encoders=encs)
    yield s, tmp_path
    s.stop()


def test_ingest_search_sheet_stats(served, capsys):
    server, tmp = served
    folder = tmp / "imgs"
    folder.mkdir()
    rng = np.random.default_rng(0)
    rows = []
    for i in range(12):
        arr = (rng.random((48, 48, 3)) * 255).astype(np.uint8)
        Image.fromarray(arr).save(folder / f"item{i}.png")
        rows.append({"id": f"item{i}", "sku": f"S{i}", "title": f"item {i}", "category": ("a", "b")[i % 2],
                     "attributes": {"n": str(i)}, "image": f"item{i}.png"})
    meta = tmp / "products.jsonl"
    meta.write_text("\n".join(json.dumps(r) for r in rows))
    t = ["--target", server.target]
    assert cli.main(t + ["ingest", "--folder", str(folder), "--meta", str(meta)]) == 0
    assert "ingested 12 products" in capsys.readouterr().out
    assert cli.main(t + ["ingest", "--folder", str(folder), "--meta", str(meta)]) == 0  # resumed: nothing new
    assert "ingested 0 products; the catalogue holds 12" in capsys.readouterr().out
    sheet = tmp / "sheet.png"
    assert cli.main(t + ["search", "--image", str(folder / "item3.png"), "--top-k", "3", "--filter", "category=b",
                         "--sheet", str(sheet), "--data", str(tmp / "data")]) == 0
    out = capsys.readouterr().out
    assert "1. item3" in out and "[b]" in out and "server: total" in out
    from skulens.cli.sheet import CAPTION, MIN_H
    with Image.open(sheet) as im:     # the 48 px query and its hits drawn at the row height, captioned
        a = np.asarray(im.convert("L"))
    assert a.shape == (MIN_H + CAPTION + 8, 8 + 4 * (MIN_H + 8))
    for i in range(4):                # query, then 3 hits: each a picture of the row's height
        x = 8 + i * (MIN_H + 8)
        assert a[4:4 + MIN_H, x:x + MIN_H].std() > 20
        assert (a[MIN_H + 10:MIN_H + 30, x:x + MIN_H] < 100).any(), "no caption"
    assert cli.main(t + ["upsert", "--id", "new", "--image", str(folder / "item5.png"), "--title", "new one",
                         "--category", "c", "--attr", "color=red"]) == 0
    assert "upserted new" in capsys.readouterr().out
    assert cli.main(t + ["upsert", "--id", "bad", "--attr", "nokey"]) == 2
    assert cli.main(t + ["stats"]) == 0
    assert json.loads(capsys.readouterr().out)["products"] == 13



def test_products_photographed_several_times(served, capsys):
    """A CSV listing several files per product, an extra image added and removed from the command
    line, a search that names the image that matched, and its contact sheet."""
    server, tmp = served
    folder = tmp / "imgs"
    folder.mkdir()
    rng = np.random.default_rng(1)
    lines = ["id,title,category,image"]
    for i in range(6):
        for side in ("front", "back"):
            Image.fromarray((rng.random((48, 48, 3)) * 255).astype(np.uint8)).save(folder / f"p{i}-{side}.png")
        lines.append(f"p{i},thing {i},c,p{i}-front.png;p{i}-back.png")
    (tmp / "products.csv").write_text("\n".join(lines))
    Image.fromarray((rng.random((48, 48, 3)) * 255).astype(np.uint8)).save(folder / "box.png")
    t = ["--target", server.target]
    assert cli.main(t + ["ingest", "--folder", str(folder), "--meta", str(tmp / "products.csv")]) == 0
    capsys.readouterr()
    assert cli.main(t + ["stats"]) == 0
    st = json.loads(capsys.readouterr().out)
    assert (st["products"], st["images"]) == (6, 12)
    sheet = tmp / "sheet.png"
    assert cli.main(t + ["search", "--image", str(folder / "p4-back.png"), "--top-k", "3", "--sheet", str(sheet)]) == 0
    out = capsys.readouterr().out
    assert "1. p4" in out and "(image p4-back)" in out and sheet.exists()
    assert cli.main(t + ["images", "add", "--id", "p2", f"box={folder / 'box.png'}"]) == 0
    assert "changed 1 image(s); it holds 3" in capsys.readouterr().out
    assert cli.main(t + ["search", "--image", str(folder / "box.png"), "--top-k", "1"]) == 0
    assert "1. p2" in capsys.readouterr().out
    assert cli.main(t + ["images", "remove", "--id", "p2", "box", "p2-back"]) == 0
    assert "changed 2 image(s); it holds 1" in capsys.readouterr().out
    assert cli.main(t + ["images", "add", "--id", "p2", "no-equals-sign"]) == 2
    assert cli.main(t + ["upsert", "--id", "q", "--image", str(folder / "box.png"), "--also",
                         f"side={folder / 'p0-back.png'}"]) == 0
    capsys.readouterr()
    assert cli.main(t + ["stats"]) == 0
    assert json.loads(capsys.readouterr().out)["images"] == 12 - 2 + 1 + 2

def test_search_scene_prints_regions_and_draws_them(served, capsys):
    """`skulens search --image shelf.png --scene --sheet out.png`: regions with boxes, and the sheet
    draws the picture with them (its best hits beside it)."""
    server, tmp = served
    rng = np.random.default_rng(1)
    shelf = (rng.random((240, 320, 3)) * 60).astype(np.uint8)
    for i in range(3):   # three bright random "products" on a dark shelf
        y, x = 40 + 60 * (i % 2), 20 + 100 * i
        shelf[y:y + 80, x:x + 70] = (rng.random((80, 70, 3)) * 255).astype(np.uint8)
    Image.fromarray(shelf).save(tmp / "shelf.png")
    t = ["--target", server.target]
    sheet = tmp / "scene.png"
    assert cli.main(t + ["search", "--image", str(tmp / "shelf.png"), "--scene", "--sheet", str(sheet)]) == 0
    out = capsys.readouterr().out
    assert "propose" in out and "candidate regions" in out and sheet.exists()
    with Image.open(sheet) as im:
        assert im.height >= 240 and im.width >= 320
    assert cli.main(t + ["search", "--text", "x", "--scene"]) == 2


def test_a_refused_request_is_one_line_not_a_traceback(served, capsys, tmp_path):
    t = ["--target", served[0].target]
    assert cli.main(t + ["search", "--vector", "nan,1,2,3"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("skulens search: INVALID_ARGUMENT: ") and "Traceback" not in err and len(err.splitlines()) == 1
    assert cli.main(t + ["search", "--image", str(tmp_path / "missing.png")]) == 2
    assert "No such file" in capsys.readouterr().err


def test_serve_cpus_pins_every_thread_and_a_bad_list_is_one_line(tmp_path):
    """`skulens serve --cpus 0` (here with the aio server): every thread of the process may run on
    CPU 0 only, and it serves; a CPU the process may not use is refused in one line (exit 2)."""
    import os
    import subprocess
    import sys
    from skulens.client import Client
    exe = os.path.join(os.path.dirname(sys.executable), "skulens")
    cmd = [exe, "serve", "--data", str(tmp_path / "d"), "--dim", "4", "--port", "0", "--server", "aio"]
    bad = subprocess.run(cmd + ["--cpus", str(max(os.sched_getaffinity(0)) + 1)], capture_output=True, text=True)
    assert bad.returncode == 2 and "may use CPUs" in bad.stderr and "Traceback" not in bad.stderr
    p = subprocess.Popen(cmd + ["--cpus", "0"], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        line = p.stdout.readline()
        assert line.startswith("skulens serving on"), line
        target = line.split(" on ")[1].split()[0]
        with Client(target) as c:
            c.upsert([dict(id="a", vector=[1.0, 0, 0, 0]), dict(id="b", vector=[0, 1.0, 0, 0])])
            assert c.search(vector=[0.9, 0.1, 0, 0], top_k=1)[0].product_id == "a"
        tasks = os.listdir(f"/proc/{p.pid}/task")
        assert len(tasks) > 3
        for tid in tasks:
            assert os.sched_getaffinity(int(tid)) == {0}
    finally:
        p.terminate()
        p.wait(30)


def test_serve_with_a_store_it_cannot_reach_or_a_bad_shard_says_so_in_one_line(tmp_path):
    import os
    import subprocess
    import sys
    exe = os.path.join(os.path.dirname(sys.executable), "skulens")
    cmd = [exe, "serve", "--data", str(tmp_path / "d"), "--dim", "4", "--port", "0"]
    for extra, words in ((["--store", "postgresql://skulens@127.0.0.1:1/x"], "PostgreSQL"),
                         (["--shard", "3/2", "--store", str(tmp_path / "s.db")], "0 <= i < n"),
                         (["--shard", "0/2"], "shared store")):
        r = subprocess.run(cmd + extra, capture_output=True, text=True, timeout=60)
        assert r.returncode == 2 and words in r.stderr, r.stderr
        assert "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr
