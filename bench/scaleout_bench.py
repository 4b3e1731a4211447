"""Scale-out on one machine (issue 21): `skulens serve --workers 1` against `--workers 2` and a bare
gRPC echo, side by side in interleaved rounds; replication lag under a steady write load
(PostgreSQL and shared SQLite); ingest rate into PostgreSQL and SQLite.

    python bench/scaleout_bench.py [--n 50000] [--dim 256] [--work /tmp/sob] [--only workers|lag|ingest]

Every server is its own process, the client (this process) too, as a deployment has it.
PostgreSQL is started here from Debian's package (bench/postgres.py) with fsync on.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "server"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import grpc_floor as floor  # noqa: E402
from postgres import Postgres  # noqa: E402
from synthetic import clustered  # noqa: E402

from skulens.catalog import Catalog  # noqa: E402
from skulens.client import Client  # noqa: E402
from skulens.client.client import search_request  # noqa: E402

OUT = Path(__file__).resolve().parent
METHOD = "/skulens.v1.ProductSearch/Search"
WRITERS = 32
SKULENS = [str(Path(sys.executable).with_name("skulens")), "serve", "--port", "0"]


def cpu_model() -> str:
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor()


def tree_cpu(pid: int) -> float:
    """CPU seconds of a process and its children (the workers under the supervisor)."""
    total = floor.cpu_seconds(pid)
    try:
        kids = open(f"/proc/{pid}/task/{pid}/children").read().split()
    except OSError:
        kids = []
    return total + sum(tree_cpu(int(k)) for k in kids)


def drive(port: int, method: str, payloads, concurrency: int, total: int) -> dict:
    """total calls from `concurrency` callers on one asyncio loop (the cheapest Python client),
    each on a connection of its own: grpc shares one connection between channels to the same
    target unless told not to, and SO_REUSEPORT spreads connections, not calls. Also the
    client's own CPU per call: on 2 cores it competes with the servers."""
    import asyncio
    import grpc

    async def run():
        opts = [("grpc.use_local_subchannel_pool", 1)]
        chans = [grpc.aio.insecure_channel(f"127.0.0.1:{port}", options=opts) for _ in range(concurrency)]
        calls = [ch.unary_unary(method) for ch in chans]
        for c in calls:
            await c(payloads[0])  # connected before the clock starts
        counter, lat = iter(range(total)), []

        async def worker(call):
            for i in counter:
                t = time.perf_counter_ns()
                await call(payloads[i % len(payloads)])
                lat.append(time.perf_counter_ns() - t)
        t0, c0 = time.perf_counter(), time.process_time()
        await asyncio.gather(*(worker(c) for c in calls))
        dt, cpu = time.perf_counter() - t0, time.process_time() - c0
        for ch in chans:
            await ch.close()
        return lat, dt, cpu
    lat, dt, cpu = asyncio.run(run())
    a = np.asarray(lat) / 1e3
    return {"p50_us": float(np.percentile(a, 50)), "p99_us": float(np.percentile(a, 99)), "qps": len(a) / dt,
            "client_cpu_us": cpu * 1e6 / len(a)}


LOADGEN = Path(__file__).resolve().parents[1] / "build" / "bench" / "loadgen"


def cpp_loadgen() -> Path | None:
    """bench/loadgen.cpp built (Debian libgrpc++-dev), or None where grpc++ is not installed."""
    src = Path(__file__).resolve().parent / "loadgen.cpp"
    if LOADGEN.exists() and LOADGEN.stat().st_mtime > src.stat().st_mtime:
        return LOADGEN
    try:
        flags = subprocess.run(["pkg-config", "--cflags", "--libs", "grpc++"], check=True, capture_output=True,
                               text=True).stdout.split()
        LOADGEN.parent.mkdir(parents=True, exist_ok=True)
        subprocess.run(["g++", "-O2", "-std=c++17", str(src), "-o", str(LOADGEN), *flags], check=True,
                       capture_output=True)
        return LOADGEN
    except (OSError, subprocess.CalledProcessError):
        return None


def drive_cpp(binary: Path, port: int, method: str, payload_file: Path, concurrency: int, total: int) -> dict:
    out = subprocess.run([str(binary), f"127.0.0.1:{port}", method, str(payload_file), str(concurrency),
                          str(total)], check=True, capture_output=True, text=True).stdout
    return json.loads(out)


def build(folder: Path, n: int, dim: int) -> Path:
    """A catalogue in folder (catalog.db + snapshot) and its snapshot copied for two workers."""
    if (folder / "built").exists():
        return folder
    shutil.rmtree(folder, ignore_errors=True)
    x = clustered(n, dim, seed=1)
    with Catalog.open(str(folder), dim, progress=True) as c:
        for a in range(0, n, 5000):
            c.upsert([dict(id=f"p{i}", vector=x[i], category=f"c{i % 10}") for i in range(a, min(n, a + 5000))])
        c.wait_indexed()
    for i in range(2):
        (folder / "workers" / str(i)).mkdir(parents=True, exist_ok=True)
        shutil.copytree(folder / "snapshots", folder / "workers" / str(i) / "snapshots")
    (folder / "built").touch()
    return folder


def workers(args, work: Path) -> dict:
    data = build(work / f"cat-{args.n}x{args.dim}", args.n, args.dim)
    q = clustered(512, args.dim, seed=2)
    payloads = [search_request(vector=v, top_k=10, mode="ann", ef=128).SerializeToString() for v in q]
    me = [sys.executable, str(OUT / "service_bench.py"), "--dim", str(args.dim), "--serve"]
    systems = {"echo": (me + ["echo"], int),
               "workers-1": (SKULENS + ["--dim", str(args.dim), "--data", str(data)], floor.skulens_port),
               "workers-2": (SKULENS + ["--dim", str(args.dim), "--data", str(data), "--workers", "2"],
                             floor.skulens_port)}
    binary = cpp_loadgen() if args.client == "cpp" else None
    pfile = work / "payloads.bin"
    pfile.write_bytes(b"".join(len(b).to_bytes(4, "little") + b for b in payloads))
    print(f"client: {'bench/loadgen.cpp' if binary else 'Python grpc.aio'}", flush=True)
    children, rows = {}, []
    try:
        for name, (cmd, ready) in systems.items():
            children[name] = floor.start_child(cmd, ready)
        time.sleep(2.0)
        rss = {name: rss_mib(p.pid) for name, (p, _) in children.items()}
        print("RSS MiB (process and its workers):", rss, flush=True)
        for conc in (1, 16, 64):
            res = {name: [] for name in children}
            for _ in range(3):
                for name, (p, port) in children.items():
                    method = "/bench.Echo/Echo" if name == "echo" else METHOD
                    c0 = tree_cpu(p.pid)
                    r = (drive_cpp(binary, port, method, pfile, conc, args.requests // 3) if binary
                         else drive(port, method, payloads, conc, args.requests // 3))
                    r["server_cpu_us"] = (tree_cpu(p.pid) - c0) * 1e6 * 3 / args.requests
                    res[name].append(r)
            for name, r in res.items():
                row = {k: float(np.median([x[k] for x in r])) for k in r[0]}
                rows.append({"system": name, "concurrency": conc, **row})
                print(f"c={conc:2d} {name:10s} p50 {row['p50_us']:7.0f} us  p99 {row['p99_us']:7.0f} us  "
                      f"{row['qps']:7.0f} qps  server CPU {row['server_cpu_us']:6.0f} us/call  "
                      f"client CPU {row['client_cpu_us']:5.0f} us/call", flush=True)
    finally:
        for p, _ in children.values():
            floor.stop_child(p)
    get = {(r["system"], r["concurrency"]): r for r in rows}
    speedup = get[("workers-2", 16)]["qps"] / get[("workers-1", 16)]["qps"]
    p50 = get[("workers-2", 1)]["p50_us"] / get[("workers-1", 1)]["p50_us"]
    targets = [f"--workers 2 QPS at c=16 = {speedup:.2f}x one worker (target >= 1.7x): "
               f"{'met' if speedup >= 1.7 else 'NOT met'}",
               f"--workers 2 c=1 p50 = {p50:.2f}x one worker (target <= 1.10x): {'met' if p50 <= 1.10 else 'NOT met'}"]
    # The machine's own ceiling for two workers: its cores shared by the servers and this client.
    w2 = get[("workers-2", 16)]
    w1 = get[("workers-1", 16)]
    ceiling = (os.cpu_count() / (w2["server_cpu_us"] + w2["client_cpu_us"]) * 1e6) / w1["qps"]
    targets.append(f"CPU ceiling here for workers-2 / workers-1 at c=16 (cores / (server + client CPU per call)): "
                   f"{ceiling:.2f}x")
    for t in targets:
        print(t)
    return {"rows": rows, "targets": targets, "steal": steal(), "rss_mib": rss,
            "client": "bench/loadgen.cpp" if binary else "python-aio"}


def rss_mib(pid: int) -> list[float]:
    """Resident memory of a process and of each of its children, MiB."""
    def one(p):
        with open(f"/proc/{p}/status") as f:
            return next(int(x.split()[1]) for x in f if x.startswith("VmRSS")) / 1024
    try:
        kids = [int(k) for k in open(f"/proc/{pid}/task/{pid}/children").read().split()]
    except OSError:
        kids = []
    return [round(one(pid), 1)] + [round(one(k), 1) for k in kids]


def steal() -> float:
    """The share of CPU time the hypervisor took from this VM over one second (noisy neighbours)."""
    def read():
        with open("/proc/stat") as f:
            v = [int(x) for x in f.readline().split()[1:]]
        return v[7], sum(v)
    s0, t0 = read()
    time.sleep(1.0)
    s1, t1 = read()
    return (s1 - s0) / max(1, t1 - t0)


def _serve(args, *extra) -> tuple:
    return floor.start_child(SKULENS + ["--dim", str(args.dim), *extra], floor.skulens_port)


def lag(args, work: Path, pg: Postgres) -> dict:
    """Writes through replica A at `--rate` products/s (`--batch` products per Upsert, from
    WRITERS threads, so that group commit can keep up); every 50 ms a probe acks a write through A and times a Search on B with that
    min_seq. The lag is that time less B's own search time (min_seq already held)."""
    out = {}
    for kind in ("postgresql", "sqlite"):
        store = pg.database() if kind == "postgresql" else str(work / "lag-shared.db")
        for old in (store, work / f"lag-{kind}-a", work / f"lag-{kind}-b"):  # a fresh store: no stale snapshots
            if kind == "sqlite" and os.path.isfile(old):
                os.remove(old)
            elif os.path.isdir(old):
                shutil.rmtree(old)
        a = _serve(args, "--data", str(work / f"lag-{kind}-a"), "--store", store)
        b = _serve(args, "--data", str(work / f"lag-{kind}-b"), "--store", store)
        rng = np.random.default_rng(0)
        stop, sent = threading.Event(), [0]
        vecs = rng.standard_normal((4096, args.dim)).astype(np.float32)

        def writer(k: int):
            period = WRITERS * args.batch / args.rate
            with Client(f"127.0.0.1:{a[1]}") as c:
                t = time.perf_counter()
                i = 0
                while not stop.is_set():
                    c.upsert([dict(id=f"w{k}-{(i + j) % 20000}", vector=vecs[(k * 7 + i + j) % 4096])
                              for j in range(args.batch)])
                    i += args.batch
                    sent[0] += args.batch
                    t += period
                    time.sleep(max(0.0, t - time.perf_counter()))
        ts = [threading.Thread(target=writer, args=(k,)) for k in range(WRITERS)]
        t0 = time.perf_counter()
        for t in ts:
            t.start()
        lags, base = [], []
        with Client(f"127.0.0.1:{a[1]}") as ca, Client(f"127.0.0.1:{b[1]}") as cb:
            time.sleep(1.0)
            while time.perf_counter() - t0 < args.lag_s:
                seq = ca.upsert([dict(id="probe", vector=vecs[0])]).seq
                t1 = time.perf_counter()
                cb.search(vector=vecs[0], top_k=1, mode="exact", min_seq=seq)
                lags.append(time.perf_counter() - t1)
                t2 = time.perf_counter()
                cb.search(vector=vecs[0], top_k=1, mode="exact", min_seq=seq)
                base.append(time.perf_counter() - t2)
                time.sleep(0.05)
        stop.set()
        for t in ts:
            t.join()
        rate = sent[0] / (time.perf_counter() - t0)
        floor.stop_child(a[0])
        floor.stop_child(b[0])
        ms = (np.asarray(lags) - np.median(base)) * 1e3
        out[kind] = {"products_per_s": rate, "batch": args.batch, "probes": len(ms), "lag_p50_ms": float(np.percentile(ms, 50)),
                     "lag_p99_ms": float(np.percentile(ms, 99)), "search_p50_ms": float(np.median(base) * 1e3)}
        print(f"lag {kind}: {out[kind]}", flush=True)
    return out


def ingest(args, work: Path, pg: Postgres) -> dict:
    """Products per second into each store, in batches of 500 (one transaction each), in process."""
    n = args.ingest_n
    x = clustered(n, args.dim, seed=3)
    out = {}
    for kind in ("sqlite", "postgresql"):
        folder = work / f"ingest-{kind}"
        shutil.rmtree(folder, ignore_errors=True)
        store = pg.database() if kind == "postgresql" else None
        with Catalog.open(str(folder), args.dim, store=store) as c:
            t0 = time.perf_counter()
            for a in range(0, n, 500):
                c.upsert([dict(id=f"p{i}", vector=x[i], category="c") for i in range(a, min(n, a + 500))])
            dt = time.perf_counter() - t0
            t1 = time.perf_counter()
            for i in range(200):
                c.upsert([dict(id=f"p{i}", vector=x[i])])
            one = (time.perf_counter() - t1) / 200
        out[kind] = {"products_per_s": n / dt, "single_upsert_ms": one * 1e3}
        print(f"ingest {kind}: {out[kind]}", flush=True)
    out["pg_over_sqlite"] = out["postgresql"]["products_per_s"] / out["sqlite"]["products_per_s"]
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=50_000)
    ap.add_argument("--dim", type=int, default=256)
    ap.add_argument("--requests", type=int, default=3000, help="calls per system and concurrency (3 rounds)")
    ap.add_argument("--rate", type=float, default=1000.0, help="writes/s during the lag measurement")
    ap.add_argument("--lag-s", type=float, default=20.0)
    ap.add_argument("--batch", type=int, default=1, help="products per Upsert during the lag measurement")
    ap.add_argument("--ingest-n", type=int, default=20_000)
    ap.add_argument("--work", type=Path, default=Path("/tmp/skulens-scaleout"))
    ap.add_argument("--only", choices=["workers", "lag", "ingest"])
    ap.add_argument("--client", choices=["cpp", "python"], default="cpp",
                    help="load generator for the workers part: bench/loadgen.cpp (needs libgrpc++-dev; falls back "
                    "to Python) or Python grpc.aio")
    ap.add_argument("--out", type=Path, default=OUT / "scaleout_bench.json")
    args = ap.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    result = {"cpu": cpu_model(), "cores": os.cpu_count(), "simd": os.environ.get("SKULENS_SIMD", "auto"),
              "n": args.n, "dim": args.dim, "command": " ".join(sys.argv)}
    if args.only in (None, "workers"):
        result["workers"] = workers(args, args.work)
    if args.only in (None, "lag", "ingest"):
        pg = Postgres(fsync=True)
        try:
            if args.only in (None, "lag"):
                result["lag"] = lag(args, args.work, pg)
            if args.only in (None, "ingest"):
                result["ingest"] = ingest(args, args.work, pg)
        finally:
            pg.stop()
    args.out.write_text(json.dumps(result, indent=1))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
