"""What the service benchmarks share: the floors skulens is measured against (a bare gRPC echo,
bare hnswlib behind the same kind of server), each run as a child process of its own, and the
load driver that reports latency, throughput and the server process's CPU per call.

A child announces its port on stdout and serves until its stdin closes.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import threading
import time
from concurrent import futures

import grpc
import numpy as np


def spin(us: int) -> None:
    """Busy for `us` microseconds: CPU work that touches no memory."""
    end = time.perf_counter_ns() + us * 1000
    while time.perf_counter_ns() < end:
        pass


def _until_stdin_closes(start, stop) -> None:
    start()
    sys.stdin.read()
    stop()


def echo_server(workers: int, busy_us: int = 0, aio: bool = False) -> None:
    """The floor of any gRPC service here: bytes in, the same bytes out, no parsing. With busy_us,
    the handler first spins that long (hot caches, no memory traffic). With aio, the same echo on
    grpc.aio with the handler a coroutine."""
    if aio:
        async def main():
            async def echo(req, ctx):
                return req
            s = grpc.aio.server()
            s.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(
                "bench.Echo", {"Echo": grpc.unary_unary_rpc_method_handler(echo)}),))
            port = s.add_insecure_port("127.0.0.1:0")
            await s.start()
            print(port, flush=True)
            await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)
            await s.stop(0)
        return asyncio.run(main())

    def echo(req, ctx):
        if busy_us:
            spin(busy_us)
        return req
    s = grpc.server(futures.ThreadPoolExecutor(max_workers=workers))
    s.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(
        "bench.Echo", {"Echo": grpc.unary_unary_rpc_method_handler(echo)}),))
    port = s.add_insecure_port("127.0.0.1:0")
    _until_stdin_closes(lambda: (s.start(), print(port, flush=True)), lambda: s.stop(0))


def query_vector(req) -> np.ndarray:
    """A SearchRequest's vector, from whichever of the two wire forms it came in."""
    v = req.query.vector
    if v.le_float32:
        return np.frombuffer(v.le_float32, "<f4")
    return np.fromiter(v.values, np.float32, len(v.values))


def hnswlib_server(workers: int, graph: str, dim: int, ef: int) -> None:
    """The floor of a search service: the same graph file in bare hnswlib behind the same kind of
    gRPC server, answering skulens' Search with ids and scores and nothing else (no checks, no
    locks, no filters, no catalogue)."""
    import hnswlib
    from skulens.v1 import skulens_pb2 as pb
    g = hnswlib.Index(space="ip", dim=dim)
    g.load_index(graph)
    g.set_ef(ef)

    def search(req, ctx):
        labels, dist = g.knn_query(query_vector(req), k=req.top_k, num_threads=1)
        return pb.SearchResponse(hits=[pb.Hit(product_id=f"p{i}", score=1 - d)
                                       for i, d in zip(labels[0].tolist(), dist[0].tolist())])
    s = grpc.server(futures.ThreadPoolExecutor(max_workers=workers))
    s.add_generic_rpc_handlers((grpc.method_handlers_generic_handler("skulens.v1.ProductSearch", {
        "Search": grpc.unary_unary_rpc_method_handler(search, request_deserializer=pb.SearchRequest.FromString,
                                                      response_serializer=pb.SearchResponse.SerializeToString)}),))
    port = s.add_insecure_port("127.0.0.1:0")
    _until_stdin_closes(lambda: (s.start(), print(port, flush=True)), lambda: s.stop(0))


def start_child(cmd: list[str], ready, env=None) -> tuple[subprocess.Popen, int]:
    """A server process; `ready(line)` returns its port from the line that announces it."""
    p = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env)
    for line in p.stdout:
        port = ready(line)
        if port:
            return p, port
    raise RuntimeError(f"{cmd[0]} exited ({p.wait()}) before serving")


def stop_child(p: subprocess.Popen) -> None:
    p.stdin.close()
    p.terminate()
    p.wait(30)


def skulens_port(line: str) -> int:
    """The port in `skulens serve`'s 'skulens serving on HOST:PORT ...' line (0: not that line)."""
    if not line.startswith("skulens serving on"):
        return 0
    return int(line.split(" on ")[1].split()[0].rsplit(":", 1)[1])


def cpu_seconds(pid: int) -> float:
    """User + system CPU a process has used so far (all its threads)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def drive(make_call, payloads, concurrency: int, total: int, pid: int | None = None) -> dict:
    """total calls spread over `concurrency` threads, each with its own channel; with pid, the
    server process's CPU per call as well."""
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
    c0 = cpu_seconds(pid) if pid else 0.0
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    dt = time.perf_counter() - t0
    a = np.asarray(lat) / 1e3
    out = {"p50_us": float(np.percentile(a, 50)), "p99_us": float(np.percentile(a, 99)), "qps": len(a) / dt}
    if pid:
        out["server_cpu_us"] = (cpu_seconds(pid) - c0) * 1e6 / len(a)
    return out


def caller(port: int, method: str):
    """make_call for drive(): raw bytes to `method` on one channel of the calling thread's own."""
    def make():
        f = grpc.insecure_channel(f"127.0.0.1:{port}").unary_unary(method)
        return f
    return make
