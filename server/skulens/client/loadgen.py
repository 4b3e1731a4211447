"""A ghz-style load generator for skulens (ghz itself cannot be installed here).

    skulens loadgen --call Search -d @request.json -c 16 -n 10000 [--rps 500] [-z 30s]
                    [--connections 4] [-m '{"authorization": "..."}'] [-o report.json]

The payload is the request message as JSON (protobuf's JSON mapping, as ghz
takes it), inline or `@file`. The report has ghz's JSON fields (count, total,
average, fastest, slowest, rps, latencyDistribution, histogram,
statusCodeDistribution, errorDistribution; durations in nanoseconds), so tools
written for ghz's output read it.
"""

from __future__ import annotations

import json
import threading
import time
from collections import Counter

import grpc
from google.protobuf import json_format

from ..v1 import skulens_pb2 as pb
from ..v1 import skulens_pb2_grpc as pb_grpc
from .client import channel_args

CALLS = {"Search": pb.SearchRequest, "GetProduct": pb.GetProductRequest, "Stats": pb.StatsRequest,
         "Embed": pb.EmbedRequest, "Upsert": pb.UpsertRequest, "Delete": pb.DeleteRequest}


def parse_duration(s: str | None) -> float | None:
    """'30s', '2m', '500ms' or plain seconds."""
    if not s:
        return None
    for suffix, mult in (("ms", 1e-3), ("s", 1.0), ("m", 60.0), ("h", 3600.0)):
        if s.endswith(suffix) and s[: -len(suffix)].replace(".", "", 1).isdigit():
            return float(s[: -len(suffix)]) * mult
    return float(s)


def load_payload(call: str, data: str):
    text = open(data[1:]).read() if data.startswith("@") else data
    return json_format.Parse(text, CALLS[call]())


def run(target: str, call: str, request, concurrency: int = 1, total: int | None = 200,
        duration: float | None = None, rps: float | None = None, connections: int = 1, metadata=None,
        timeout: float = 20.0, api_key: str | None = None, tls=(None, None, None)) -> dict:
    if total is None and duration is None:
        raise ValueError("give a total (-n) or a duration (-z)")
    creds, md = channel_args(api_key, metadata, *tls)
    channels = [grpc.secure_channel(target, creds) if creds is not None else grpc.insecure_channel(target)
                for _ in range(max(1, connections))]
    stubs = [getattr(pb_grpc.ProductSearchStub(ch), call) for ch in channels]
    lock = threading.Lock()
    issued = 0
    lat: list[int] = []
    codes: Counter = Counter()
    errors: Counter = Counter()
    start = time.perf_counter()
    stop_at = start + duration if duration else None
    interval = 1.0 / rps if rps else 0.0

    def take() -> float | None:
        """The next request's slot (its scheduled send time), or None when done."""
        nonlocal issued
        with lock:
            if total is not None and issued >= total:
                return None
            slot = start + issued * interval
            issued += 1
        if stop_at is not None and max(slot, time.perf_counter()) >= stop_at:
            return None
        return slot

    def worker(i: int) -> None:
        fn = stubs[i % len(stubs)]
        while (slot := take()) is not None:
            if interval:
                wait = slot - time.perf_counter()
                if wait > 0:
                    time.sleep(wait)
            t = time.perf_counter_ns()
            try:
                fn(request, timeout=timeout, metadata=md)
                code, err = "OK", None
            except grpc.RpcError as e:
                code, err = e.code().name, f"rpc error: code = {e.code().name} desc = {e.details()}"
            dt = time.perf_counter_ns() - t
            with lock:
                lat.append(dt)
                codes[code] += 1
                if err:
                    errors[err] += 1

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(concurrency)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - start
    for ch in channels:
        ch.close()
    return report(lat, elapsed, codes, errors)


def percentile(ordered: list[int], p: float) -> float:
    """The p-th percentile of sorted values, interpolated linearly (numpy's default)."""
    x = (len(ordered) - 1) * p / 100
    lo = int(x)
    hi = min(lo + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (x - lo)


def report(lat: list[int], elapsed: float, codes: Counter, errors: Counter) -> dict:
    n = len(lat)
    out = {"count": n, "total": int(elapsed * 1e9), "rps": n / elapsed if elapsed else 0.0,
           "statusCodeDistribution": dict(codes), "errorDistribution": dict(errors)}
    if n == 0:
        return {**out, "average": 0, "fastest": 0, "slowest": 0, "latencyDistribution": [], "histogram": []}
    ordered = sorted(lat)
    lo, hi = ordered[0], ordered[-1]
    out.update(average=int(sum(lat) / n), fastest=int(lo), slowest=int(hi))
    out["latencyDistribution"] = [{"percentage": p, "latency": int(percentile(ordered, p))}
                                  for p in (10, 25, 50, 75, 90, 95, 99)]
    # Ten equal bins from fastest to slowest (the last one closed), as numpy.histogram counts.
    width = (hi - lo) / 10
    counts = [0] * 10
    for v in lat:
        counts[min(9, int((v - lo) / width)) if width else 0] += 1
    out["histogram"] = [{"mark": (lo + width * (i + 1)) / 1e9, "count": c, "frequency": c / n}
                        for i, c in enumerate(counts)]
    return out


def summary(r: dict) -> str:
    ms = lambda ns: f"{ns / 1e6:.2f} ms"  # noqa: E731
    lines = ["Summary:", f"  Count:\t{r['count']}", f"  Total:\t{ms(r['total'])}",
             f"  Slowest:\t{ms(r['slowest'])}", f"  Fastest:\t{ms(r['fastest'])}",
             f"  Average:\t{ms(r['average'])}", f"  Requests/sec:\t{r['rps']:.2f}", "", "Latency distribution:"]
    lines += [f"  {d['percentage']} % in {ms(d['latency'])}" for d in r["latencyDistribution"]]
    lines += ["", "Status code distribution:"] + [f"  [{k}]\t{v} responses" for k, v in r["statusCodeDistribution"].items()]
    if r["errorDistribution"]:
        lines += ["", "Error distribution:"] + [f"  [{v}]\t{k}" for k, v in r["errorDistribution"].items()]
    return "\n".join(lines)


def main_args(args) -> int:
    request = load_payload(args.call, args.data)
    r = run(args.target, args.call, request, concurrency=args.concurrency, total=args.total,
            duration=parse_duration(args.duration), rps=args.rps, connections=args.connections,
            metadata=json.loads(args.metadata) if args.metadata else None, api_key=args.api_key,
            tls=(args.tls_ca, args.tls_cert, args.tls_key))
    if args.output:
        with open(args.output, "w") as f:
            json.dump(r, f, indent=1)
    print(summary(r))
    return 0
