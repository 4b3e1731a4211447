"""Sync thread-pool grpcio server or grpc.aio? The same echo (1,100-byte payload, the
size of a 256-d Search request) on both, one Python client, 3,000 calls each, twice.

    python bench/server_choice.py
"""

import asyncio
import threading
import time
from concurrent import futures

import grpc
import numpy as np


def sync_server() -> int:
    h = grpc.method_handlers_generic_handler("bench.Echo", {"Echo": grpc.unary_unary_rpc_method_handler(lambda r, c: r)})
    s = grpc.server(futures.ThreadPoolExecutor(16))
    s.add_generic_rpc_handlers((h,))
    port = s.add_insecure_port("127.0.0.1:0")
    s.start()
    sync_server.keep = s
    return port


def aio_server() -> int:
    ready, box = threading.Event(), {}

    async def main():
        async def echo(r, c):
            return r
        h = grpc.method_handlers_generic_handler("bench.Echo", {"Echo": grpc.unary_unary_rpc_method_handler(echo)})
        s = grpc.aio.server()
        s.add_generic_rpc_handlers((h,))
        box["port"] = s.add_insecure_port("127.0.0.1:0")
        await s.start()
        ready.set()
        await s.wait_for_termination()
    threading.Thread(target=lambda: asyncio.run(main()), daemon=True).start()
    ready.wait()
    return box["port"]


def measure(port: int, n: int = 3000) -> tuple[float, float]:
    f = grpc.insecure_channel(f"127.0.0.1:{port}").unary_unary("/bench.Echo/Echo")
    payload = b"x" * 1100
    for _ in range(200):
        f(payload)
    lat = []
    for _ in range(n):
        t = time.perf_counter_ns()
        f(payload)
        lat.append(time.perf_counter_ns() - t)
    a = np.asarray(lat) / 1e3
    return float(np.percentile(a, 50)), float(np.percentile(a, 99))


if __name__ == "__main__":
    sp, ap = sync_server(), aio_server()
    for _ in range(2):
        for name, port in (("sync", sp), ("aio", ap)):
            p50, p99 = measure(port)
            print(f"{name:4s} echo  p50 {p50:5.0f} us  p99 {p99:5.0f} us")
