"""Service benchmark: skulens Search by vector (HNSW, 100k x 256 clustered, recall@10 >= 0.99)
on each server kind beside a bare grpcio echo (sync and grpc.aio) carrying the same request bytes
and bare hnswlib behind the same kind of gRPC server on the same graph, at concurrency 1 and 16,
with each server process's CPU per call; the same searches in process (pip hnswlib's walk, the
exact kernel); exact mode at 20k rows; then an image query's server-side stages beside bare ONNX
Runtime inference of the same model. Prints the vector-path issue's targets, met or not.

    python bench/service_bench.py [--n 100000] [--servers sync,aio] [--wire bytes|values]
                                  [--work DIR] [--only vector|image]

Each server runs in its own process on loopback (16 handler threads where it has a pool); the
client is this process, Python grpcio with one channel per worker thread. Writes
bench/service_bench.json.
"""

from __future__ import annotations

import argparse
import glob
import io
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

import grpc
import numpy as np
from tqdm import tqdm

import grpc_floor as floor
from machine import cores, cpu_model
from skulens import encode as encoders
from skulens.catalog import Catalog
from skulens.client import search_request
from skulens.index import ExactIndex, best_simd
from skulens.server import Config, Server
from synthetic import clustered, exact_topk, manifold, recall
from skulens.v1 import skulens_pb2 as pb

OUT = Path(__file__).parent


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=100_000)
    ap.add_argument("--dim", type=int, default=256)
    ap.add_argument("--data", choices=["clustered", "manifold"], default="clustered")
    ap.add_argument("--requests", type=int, default=3000, help="calls per system and concurrency (3 rounds)")
    ap.add_argument("--exact-n", type=int, default=20_000, help="rows of the exact-mode catalogue")
    ap.add_argument("--wire", choices=["bytes", "values"], default="bytes",
                    help="the query vector as Vector.le_float32 (the client's default) or as repeated float")
    ap.add_argument("--servers", default="sync,aio", help="skulens server kinds to run side by side")
    ap.add_argument("--cpus", default="", help="pin every server to these CPUs (skulens: --cpus; the "
                    "others: taskset), with one unpinned echo beside them for reference")
    ap.add_argument("--ef", type=int, default=0,
                    help="HNSW ef (default: the smallest of 64..256 giving recall@10 >= 0.99 in process)")
    ap.add_argument("--work", type=Path, help="keep the built catalogues here between runs")
    ap.add_argument("--model-repo", default="model_repo")
    ap.add_argument("--out", type=Path, default=OUT / "service_bench.json")
    ap.add_argument("--only", choices=["vector", "image"], help="run one part (default: both)")
    ap.add_argument("--serve", choices=["echo", "echo-aio", "hnswlib"], help=argparse.SUPPRESS)  # a child
    ap.add_argument("--graph", help=argparse.SUPPRESS)
    ap.add_argument("--busy-us", type=int, default=0, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.serve:
        if args.serve == "hnswlib":
            return floor.hnswlib_server(16, args.graph, args.dim, args.ef)
        return floor.echo_server(16, args.busy_us, aio=args.serve == "echo-aio")
    keep = args.work is not None
    work = args.work or Path(tempfile.mkdtemp(prefix="skulens-svc-"))
    work.mkdir(parents=True, exist_ok=True)
    report: dict = {"command": "python bench/service_bench.py " + " ".join(sys.argv[1:]), "cpu": cpu_model(),
                    "simd": best_simd(), "cores": cores(), "n": args.n, "dim": args.dim, "data": args.data}
    if args.only and args.out.exists():   # one part rerun: the other part's numbers stay
        report = {**json.loads(args.out.read_text()), **report}
    if args.only != "image":
        report["search_by_vector"] = by_vector(args, work)
    if args.only != "vector":
        report.update(image_queries(args, work / "image"))
    args.out.write_text(json.dumps(report, indent=1, default=float))
    if not keep:
        shutil.rmtree(work, ignore_errors=True)
    print("wrote", args.out)


def catalogue(folder: Path, x: np.ndarray) -> Path:
    """A catalogue of x's rows (p0, p1, ...), built once per folder; its latest graph file."""
    if not (folder / "built").exists():
        shutil.rmtree(folder, ignore_errors=True)
        with Catalog.open(folder, x.shape[1], exact_below=0) as cat:
            for a in tqdm(range(0, len(x), 2000), desc=f"catalogue {folder.name}", unit="batch"):
                cat.upsert([dict(id=f"p{i}", vector=x[i]) for i in range(a, min(a + 2000, len(x)))])
            cat.wait_indexed()
        (folder / "built").touch()
    return Path(sorted(glob.glob(str(folder / "snapshots" / "*" / "hnsw.bin")))[-1])


def in_process(graph: Path, x, q, truth, ef: int, exact_n: int) -> dict:
    """What the searches cost with no server around them (back to back, one thread): pip
    hnswlib on the same graph file, at the smallest ef giving recall@10 >= 0.99 unless given;
    and the exact kernel over the exact catalogue's rows, with the server's thread count."""
    import hnswlib
    g = hnswlib.Index(space="ip", dim=x.shape[1])
    g.load_index(str(graph))
    out = {}
    for e in ([ef] if ef else [64, 96, 128, 192, 256]):
        g.set_ef(e)
        found, _ = g.knn_query(q, k=10, num_threads=1)
        out = {"ef": e, "recall@10": recall(found.astype(np.int64), truth)}
        if out["recall@10"] >= 0.99:
            break
    out["walk_p50_us"] = _p50(lambda v: g.knn_query(v, k=10, num_threads=1), q)
    # The same after 0.5 ms asleep, as a server between calls at concurrency 1 (bench/cold_search.py).
    out["walk_after_sleep_p50_us"] = _p50(lambda v: g.knn_query(v, k=10, num_threads=1), q, sleep=0.0005)
    ix = ExactIndex(x.shape[1], "fp32")
    ix.add(x[:exact_n])
    qn = q / np.linalg.norm(q, axis=1, keepdims=True)
    out["exact_kernel_p50_us"] = _p50(lambda v: ix.search_unit(v, 10, None, exact_n), qn)
    out["exact_kernel_after_sleep_p50_us"] = _p50(lambda v: ix.search_unit(v, 10, None, exact_n), qn, sleep=0.0005)
    out["exact_kernel_threads"] = ix.threads
    return out


def _p50(fn, queries, rounds: int = 3, sleep: float = 0.0) -> float:
    ts = []
    for _ in range(rounds):
        for v in queries:
            if sleep:
                time.sleep(sleep)
            t = time.perf_counter_ns()
            fn(v)
            ts.append(time.perf_counter_ns() - t)
    return float(np.median(ts) / 1e3)


def by_vector(args, work: Path) -> dict:
    """Every server in its own process, as a deployment has it (the client is this process, like
    ghz is its own): skulens serve (each server kind), a bare echo, bare hnswlib behind gRPC on
    the same graph; and the same searches in process."""
    gen = clustered if args.data == "clustered" else manifold
    x, q = gen(args.n, args.dim, seed=1), gen(512, args.dim, seed=2)
    truth = exact_topk(x, q, 10)[1]
    graph = catalogue(work / f"vec-{args.data}-{args.n}x{args.dim}", x)
    exact_folder = work / f"vec-{args.data}-{args.exact_n}x{args.dim}"
    catalogue(exact_folder, x[: args.exact_n])
    alone = in_process(graph, x, q, truth, args.ef, args.exact_n)
    print("in process:", alone)
    ef = alone["ef"]
    payloads = [search_request(vector=v if args.wire == "bytes" else v.tolist(), top_k=10, mode="ann", ef=ef)
                .SerializeToString() for v in q]
    if args.wire == "values":  # the repeated-float form (search_request writes the bytes form)
        payloads = [_as_values(b) for b in payloads]
    me = [sys.executable, __file__, "--dim", str(args.dim), "--serve"]
    skulens = [str(Path(sys.executable).with_name("skulens")), "serve", "--dim", str(args.dim), "--port", "0"]
    kinds = [k for k in args.servers.split(",") if k]
    pinned = ["taskset", "-c", args.cpus] if args.cpus else []
    if args.cpus:
        skulens += ["--cpus", args.cpus]
    systems = {"echo": (pinned + me + ["echo"], int), "echo-aio": (pinned + me + ["echo-aio"], int),
               **({"echo-unpinned": (me + ["echo"], int)} if args.cpus else {}),
               "hnswlib": (pinned + me + ["hnswlib", "--graph", str(graph), "--ef", str(ef)], int),
               **{f"skulens-{k}": (skulens + ["--data", _copy(graph.parents[2], k), "--server", k], floor.skulens_port)
                  for k in kinds}}
    children: dict = {}   # stopped below, whatever happens
    try:
        for name, (cmd, ready) in systems.items():
            children[name] = floor.start_child(cmd, ready)
        result = {"in_process": alone, "wire": args.wire, "cpus": args.cpus,
                  "answers": _answers(children, payloads, truth, [f"skulens-{k}" for k in kinds])}
        result["rounds"] = _rounds(args, children, payloads)
        children["exact"] = floor.start_child(skulens + ["--data", str(exact_folder), "--server", kinds[0]],
                                              floor.skulens_port)
        result["exact"] = _exact(children["exact"][1], q, alone, args.wire)
    finally:
        for p, _ in children.values():
            floor.stop_child(p)
    result["targets"] = targets(result, [f"skulens-{k}" for k in kinds])
    for line in result["targets"]:
        print(line)
    return result


def _copy(folder: Path, kind: str) -> str:
    """A catalogue folder of its own for each server (a catalogue is open in one process at a time)."""
    mine = folder.with_name(f"{folder.name}-{kind}")
    if not (mine / "built").exists():
        shutil.rmtree(mine, ignore_errors=True)
        shutil.copytree(folder, mine)
    return str(mine)


def _as_values(raw: bytes) -> bytes:
    r = pb.SearchRequest.FromString(raw)
    v = np.frombuffer(r.query.vector.le_float32, "<f4")
    r.query.vector.le_float32 = b""
    r.query.vector.values.extend(v.tolist())
    return r.SerializeToString()


METHOD = "/skulens.v1.ProductSearch/Search"


def _search_all(port: int, payloads) -> list:
    with grpc.insecure_channel(f"127.0.0.1:{port}") as ch:
        f = ch.unary_unary(METHOD, response_deserializer=pb.SearchResponse.FromString)
        return [f(b) for b in payloads]


def _answers(children, payloads, truth, skulens_names) -> dict:
    """Recall@10 of each searching server, and skulens' own timings of the search inside it."""
    out = {}
    for name in ["hnswlib"] + skulens_names:
        rs = _search_all(children[name][1], payloads)
        found = np.array([[int(h.product_id[1:]) for h in r.hits] for r in rs])
        out[name] = {"recall@10": recall(found, truth)}
        if name != "hnswlib":
            out[name]["server_search_p50_us"] = float(np.median([r.timings.search_us for r in rs]))
            out[name]["server_total_p50_us"] = float(np.median([r.timings.total_us for r in rs]))
    print("answers:", out)
    return out


def _rounds(args, children, payloads) -> list:
    """Latency, throughput and server CPU per call of every system at concurrency 1 and 16, in
    interleaved rounds so that machine noise hits all alike."""
    rows = []
    for conc in (1, 16):
        res = {name: [] for name in children}
        for _ in range(3):
            for name, (p, port) in children.items():
                method = "/bench.Echo/Echo" if name.startswith("echo") else METHOD
                res[name].append(floor.drive(floor.caller(port, method), payloads, conc, args.requests // 3, p.pid))
        for name, r in res.items():
            row = {k: float(np.median([x[k] for x in r])) for k in r[0]}
            rows.append({"system": name, "concurrency": conc, **row})
            print(f"c={conc:2d} {name:14s} p50 {row['p50_us']:7.0f} us  p99 {row['p99_us']:7.0f} us  "
                  f"{row['qps']:7.0f} qps  server CPU {row['server_cpu_us']:6.0f} us/call")
    return rows


def _exact(port: int, q, alone: dict, wire: str) -> dict:
    """Exact mode at the small catalogue, one call at a time: the search's time inside the
    server against the kernel's in process."""
    payloads = [search_request(vector=v, top_k=10, mode="exact").SerializeToString() for v in q]
    if wire == "values":
        payloads = [_as_values(b) for b in payloads]
    _search_all(port, payloads[:100])
    rs = _search_all(port, payloads) + _search_all(port, payloads)
    out = {"server_search_p50_us": float(np.median([r.timings.search_us for r in rs])),
           "server_total_p50_us": float(np.median([r.timings.total_us for r in rs])),
           "kernel_in_process_p50_us": alone["exact_kernel_p50_us"],
           "kernel_in_process_after_sleep_p50_us": alone["exact_kernel_after_sleep_p50_us"]}
    out["ratio"] = out["server_search_p50_us"] / out["kernel_in_process_p50_us"]
    print("exact:", out)
    return out


def targets(result: dict, skulens_names) -> list[str]:
    """The vector-path issue's targets, met or not, for each skulens server kind."""
    rows = {(r["system"], r["concurrency"]): r for r in result["rounds"]}
    walk = result["in_process"]["walk_p50_us"]
    lines = []
    for name in skulens_names:
        one, echo1 = rows[name, 1], rows["echo", 1]
        many, echo16 = rows[name, 16], rows["echo", 16]
        checks = [
            (f"c=1 p50 {one['p50_us']:.0f} us <= echo {echo1['p50_us']:.0f} + 1.3 x walk {walk:.0f} "
             f"= {echo1['p50_us'] + 1.3 * walk:.0f} us", one["p50_us"] <= echo1["p50_us"] + 1.3 * walk),
            (f"c=1 p99 {one['p99_us']:.0f} us <= 1500 us", one["p99_us"] <= 1500),
            (f"c=16 QPS {many['qps']:.0f} >= 0.8 x echo {echo16['qps']:.0f} ({many['qps'] / echo16['qps']:.2f}x)",
             many["qps"] >= 0.8 * echo16["qps"]),
            (f"server CPU per call {one['server_cpu_us']:.0f} us (c=1) <= 1.5 x echo {echo1['server_cpu_us']:.0f} "
             f"({one['server_cpu_us'] / echo1['server_cpu_us']:.2f}x)", one["server_cpu_us"] <= 1.5 * echo1["server_cpu_us"]),
            (f"server CPU per call {many['server_cpu_us']:.0f} us (c=16) <= 1.5 x echo {echo16['server_cpu_us']:.0f} "
             f"({many['server_cpu_us'] / echo16['server_cpu_us']:.2f}x)",
             many["server_cpu_us"] <= 1.5 * echo16["server_cpu_us"]),
            (f"recall@10 {result['answers'][name]['recall@10']:.4f} >= 0.99", result["answers"][name]["recall@10"] >= 0.99),
        ]
        lines += [f"{name}: {'met    ' if ok else 'NOT met'} {text}" for text, ok in checks]
    e = result["exact"]
    lines.append(f"exact: {'met    ' if e['ratio'] <= 1.3 else 'NOT met'} server search {e['server_search_p50_us']:.0f} us "
                 f"<= 1.3 x kernel in process {e['kernel_in_process_p50_us']:.0f} us ({e['ratio']:.2f}x)")
    return lines


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
