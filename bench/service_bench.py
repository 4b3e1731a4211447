"""Service benchmark: skulens Search by vector (HNSW, 100k x 256) beside a bare grpcio
echo server carrying the same request bytes (also with a handler that spins as long as
skulens' search takes) and bare hnswlib behind the same kind of gRPC server on the same graph, at concurrency 1 and 16; then an image query's server-side stages
beside bare ONNX Runtime inference of the same model.

    python bench/service_bench.py [--n 100000] [--requests 3000] [--only vector|image]

Each server runs in its own process on loopback with the same thread-pool settings (16
handler threads); the client is this process, Python grpcio with one channel per worker
thread. Writes bench/service_bench.json.
"""

from __future__ import annotations

import argparse
import io
import json
import shutil
import subprocess
import tempfile
import threading
import time
from concurrent import futures
from pathlib import Path

import grpc
import numpy as np
from tqdm import tqdm

from skulens import encode as encoders
from skulens.catalog import Catalog
from skulens.client import search_request
from skulens.server import Config, Server
from synthetic import manifold
from skulens.v1 import skulens_pb2 as pb

OUT = Path(__file__).parent


def _serve_forever(server, port: int) -> None:
    """A --serve child: announce the port on stdout, serve until the parent closes our stdin."""
    import sys
    server.start()
    print(port, flush=True)
    sys.stdin.read()
    server.stop(0)


def spin(us: int) -> None:
    """Busy for `us` microseconds: CPU work that touches no memory."""
    end = time.perf_counter_ns() + us * 1000
    while time.perf_counter_ns() < end:
        pass


def echo_server(workers: int, busy_us: int = 0) -> None:
    """The floor of any gRPC service here: bytes in, the same bytes out, no parsing. With busy_us,
    the handler first spins that long (hot caches, no memory traffic): what a handler that takes
    as long as a search costs, apart from the search's own reads."""
    def echo(req, ctx):
        if busy_us:
            spin(busy_us)
        return req
    handler = grpc.method_handlers_generic_handler(
        "bench.Echo", {"Echo": grpc.unary_unary_rpc_method_handler(echo)})
    s = grpc.server(futures.ThreadPoolExecutor(max_workers=workers))
    s.add_generic_rpc_handlers((handler,))
    _serve_forever(s, s.add_insecure_port("127.0.0.1:0"))


def hnswlib_server(workers: int, graph: str, dim: int, ef: int) -> None:
    """The floor of a search service: the same graph file in bare hnswlib behind the same kind of
    gRPC server, answering skulens' Search with ids and scores and nothing else (no checks, no
    locks, no filters, no catalogue)."""
    import hnswlib
    g = hnswlib.Index(space="ip", dim=dim)
    g.load_index(graph)
    g.set_ef(ef)

    def search(req, ctx):
        v = req.query.vector.values
        labels, dist = g.knn_query(np.fromiter(v, np.float32, len(v)), k=req.top_k, num_threads=1)
        return pb.SearchResponse(hits=[pb.Hit(product_id=f"p{i}", score=1 - d)
                                       for i, d in zip(labels[0].tolist(), dist[0].tolist())])
    handler = grpc.method_handlers_generic_handler("skulens.v1.ProductSearch", {
        "Search": grpc.unary_unary_rpc_method_handler(search, request_deserializer=pb.SearchRequest.FromString,
                                                      response_serializer=pb.SearchResponse.SerializeToString)})
    s = grpc.server(futures.ThreadPoolExecutor(max_workers=workers))
    s.add_generic_rpc_handlers((handler,))
    _serve_forever(s, s.add_insecure_port("127.0.0.1:0"))


def start_child(cmd: list[str], ready) -> tuple[subprocess.Popen, int]:
    """A server process; `ready(line)` returns its port from the line that announces it."""
    p = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    for line in p.stdout:
        port = ready(line)
        if port:
            return p, port
    raise RuntimeError(f"{cmd[0]} exited ({p.wait()}) before serving")


def stop_child(p: subprocess.Popen) -> None:
    p.stdin.close()
    p.terminate()
    p.wait(30)


def drive(make_call, payloads, concurrency: int, total: int) -> dict:
    """total calls spread over `concurrency` threads, each with its own channel."""
    lat, lock, counter = [], threading.Lock(), iter(range(total))

    def worker():
        call = make_call()
        mine = []
        while True:
            with lock:
                i = next(counter, None)
            if i is None:
                break
            t = time.perf_counter_ns()
            call(payloads[i % len(payloads)])
            mine.append(time.perf_counter_ns() - t)
        with lock:
            lat.extend(mine)

    threads = [threading.Thread(target=worker) for _ in range(concurrency)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    dt = time.perf_counter() - t0
    a = np.asarray(lat) / 1e3
    return {"p50_us": float(np.percentile(a, 50)), "p99_us": float(np.percentile(a, 99)), "qps": len(a) / dt}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=100_000)
    ap.add_argument("--dim", type=int, default=256)
    ap.add_argument("--requests", type=int, default=3000)
    ap.add_argument("--model-repo", default="model_repo")
    ap.add_argument("--out", type=Path, default=OUT / "service_bench.json")
    ap.add_argument("--only", choices=["vector", "image"], help="run one part (default: both)")
    ap.add_argument("--serve", choices=["echo", "hnswlib"], help=argparse.SUPPRESS)  # a child server
    ap.add_argument("--graph", help=argparse.SUPPRESS)
    ap.add_argument("--ef", type=int, default=0,
                    help="HNSW ef of the searches (default: the catalogue's own); also the hnswlib floor's")
    ap.add_argument("--busy-us", type=int, default=0, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.serve == "echo":
        return echo_server(16, args.busy_us)
    if args.serve == "hnswlib":
        return hnswlib_server(16, args.graph, args.dim, args.ef or 64)
    work = Path(tempfile.mkdtemp(prefix="skulens-svc-"))
    report: dict = {"command": "python bench/service_bench.py", "n": args.n, "dim": args.dim}
    if args.only and args.out.exists():   # one part rerun: the other part's numbers stay
        report = {**json.loads(args.out.read_text()), **report}
    if args.only != "image":
        report["search_by_vector" + (f"_ef{args.ef}" if args.ef else "")] = by_vector(args, work)
    if args.only != "vector":
        report.update(image_queries(args, work))
    args.out.write_text(json.dumps(report, indent=1, default=float))
    shutil.rmtree(work, ignore_errors=True)
    print("wrote", args.out)


def by_vector(args, work: Path) -> list:
    """Every server in its own process, as a deployment has it (the client is a process of its
    own too, like ghz): skulens serve, a bare echo, and bare hnswlib behind gRPC on the same graph."""
    import glob
    import sys
    x = manifold(args.n, args.dim, seed=1)
    with Catalog.open(work / "data", args.dim, exact_below=0) as cat:
        for a in tqdm(range(0, args.n, 2000), desc="catalogue", unit="batch"):
            cat.upsert([dict(id=f"p{i}", vector=x[i]) for i in range(a, min(a + 2000, args.n))])
        cat.wait_indexed()
        ef = cat.ef
    graph = sorted(glob.glob(str(work / "data" / "snapshots" / "*" / "hnsw.bin")))[-1]
    q = manifold(512, args.dim, seed=2)
    payloads = [search_request(vector=v, top_k=10, mode="ann", ef=args.ef).SerializeToString()
                for v in q]
    if args.ef:
        ef = args.ef
    skulens_bin = str(Path(sys.executable).with_name("skulens"))
    me = [sys.executable, __file__, "--serve"]
    children: dict = {}   # stopped below, whatever happens (_compare adds the busy echo)
    try:
        for name, cmd, ready in (
                ("echo", me + ["echo"], int),
                ("hnswlib", me + ["hnswlib", "--graph", graph, "--dim", str(args.dim), "--ef", str(ef)], int),
                ("skulens", [skulens_bin, "serve", "--data", str(work / "data"), "--dim", str(args.dim),
                             "--port", "0"],
                 lambda line: int(line.split(" on ")[1].split()[0].rsplit(":", 1)[1])
                 if line.startswith("skulens serving on") else 0)):
            children[name] = start_child(cmd, ready)
        return _compare(args, children, x, q, payloads, ef, me)
    finally:
        for p, _ in children.values():
            stop_child(p)


def _compare(args, children: dict, x, q, payloads, ef: int, me: list) -> list:
    """Recall, in-server search time, then latency rounds over every server in `children`."""
    methods = {"echo": "/bench.Echo/Echo", "hnswlib": "/skulens.v1.ProductSearch/Search",
               "skulens": "/skulens.v1.ProductSearch/Search"}
    # What the answers are worth (recall@10 against exact) and what the search takes inside skulens.
    exact = np.argsort(-(q @ x.T), axis=1)[:, :10]
    quality = {}
    for name in ("hnswlib", "skulens"):
        with grpc.insecure_channel(f"127.0.0.1:{children[name][1]}") as ch:
            f = ch.unary_unary(methods[name], response_deserializer=pb.SearchResponse.FromString)
            rs = [f(b) for b in payloads]
        got = [[int(h.product_id[1:]) for h in r.hits] for r in rs]
        quality[name] = {"recall@10": float(np.mean([len(set(g) & set(e)) / 10 for g, e in zip(got, exact)]))}
        if name == "skulens":
            quality[name]["server_search_p50_us"] = float(np.median([r.timings.search_us for r in rs]))
            quality[name]["server_total_p50_us"] = float(np.median([r.timings.total_us for r in rs]))
    print("answers:", quality)
    busy = int(quality["skulens"]["server_search_p50_us"])
    children["echo+busy"] = start_child(me + ["echo", "--busy-us", str(busy)], lambda line: int(line))
    methods["echo+busy"] = methods["echo"]
    rows = []
    for conc in (1, 16):
        def caller(name):
            def make():
                f = grpc.insecure_channel(f"127.0.0.1:{children[name][1]}").unary_unary(methods[name])
                return lambda b: f(b)
            return make
        # Interleave rounds so machine noise hits all alike.
        res = {name: [] for name in ("echo", "echo+busy", "hnswlib", "skulens")}
        for _ in range(3):
            for name in res:
                res[name].append(drive(caller(name), payloads, conc, args.requests // 3))
        for name, r in res.items():
            row = {k: float(np.median([x[k] for x in r])) for k in ("p50_us", "p99_us", "qps")}
            rows.append({"system": name, "concurrency": conc, "ef": ef, **quality.get(name, {}), **row,
                         **({"busy_us": busy} if name == "echo+busy" else {})})
            print(f"c={conc:2d} {name:9s} p50 {row['p50_us']:7.0f} us  p99 {row['p99_us']:7.0f} us  "
                  f"{row['qps']:7.0f} qps")
    return rows


def image_queries(args, work: Path) -> dict:
    """Image queries by stage against bare ONNX Runtime, with the encoder in process and, where
    `make triton` installed it, on a Triton server started here."""
    out = {}
    local = encoders.load(args.model_repo)
    if "image" not in local:
        return out
    bare = local["image"].runner.session
    out["image_query"] = image_query(local, bare, work / "img")
    print("image query:", {k: round(v, 1) for k, v in out["image_query"].items()})
    try:
        from skulens.encode.triton import TritonServer, TritonUnavailable
        with TritonServer(args.model_repo) as t:
            out["image_query_triton"] = image_query(encoders.load(args.model_repo, triton=t.url), bare,
                                                    work / "img-triton")
            print("image query (Triton):", {k: round(v, 1) for k, v in out["image_query_triton"].items()})
    except (ImportError, TritonUnavailable) as e:
        print("no Triton row:", e)
    return out


def image_query(encs: dict, bare, data: Path) -> dict:
    from PIL import Image
    from skulens.data import datasets
    from skulens.client import Client
    enc = encs["image"]
    shutil.rmtree(data, ignore_errors=True)
    s = Server(Config(data=str(data), dim=enc.dim, port=0), encoders=encs)
    imgs, _ = datasets.load("test") if datasets.available() else (None, None)
    pngs = []
    for a in (imgs[:300] if imgs is not None else np.random.default_rng(0).integers(0, 255, (300, 28, 28))):
        b = io.BytesIO()
        Image.fromarray(a.astype(np.uint8)).save(b, "PNG")
        pngs.append(b.getvalue())
    with Client(s.target, timeout=60) as c:
        c.upsert([dict(id=f"i{i}", image=p) for i, p in enumerate(pngs[:200])])
        enc.cache.size = 0  # every query pays decode + encode
        stages, e2e, bare_us = [], [], []
        x0 = enc.preprocess([enc.decode(pngs[0])])
        for p in pngs[200:300]:
            t = time.perf_counter_ns()
            r = c.search_full(image=p, top_k=10)
            e2e.append((time.perf_counter_ns() - t) / 1e3)
            stages.append([r.timings.decode_us, r.timings.preprocess_us, r.timings.encode_us,
                           r.timings.search_us, r.timings.total_us])
            t = time.perf_counter_ns()
            bare.run(None, {"pixels": x0})
            bare_us.append((time.perf_counter_ns() - t) / 1e3)
    s.stop()
    st = np.median(np.asarray(stages), axis=0)
    return {"decode_us": st[0], "preprocess_us": st[1], "encode_us": st[2], "search_us": st[3],
            "server_total_us": st[4], "end_to_end_p50_us": float(np.median(e2e)),
            "bare_onnxruntime_p50_us": float(np.median(bare_us)),
            "transport_and_client_us": float(np.median(e2e) - st[4]),
            "ratio": float(np.median(e2e) / np.median(bare_us))}


if __name__ == "__main__":
    main()
