"""Prometheus metrics of one server, on its own registry (several servers can share a process).

Counted where things happen: every RPC by method and status code, with its latency and the
requests in flight (wire.py's handlers); the server-side stages of a search (decode, preprocess,
encode, search) from the response's own timings; encoder batch sizes; SQLite commit latency (the
catalogue's writer); auth failures by reason. Read at scrape time: catalogue size, the graph's
backlog, the query cache's hit ratio, and the drift gauges (drift.py).
"""

from __future__ import annotations

import time

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server
from prometheus_client.core import GaugeMetricFamily

LATENCY = (0.0001, 0.00025, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0, 5.0)
STAGES = ("decode", "preprocess", "encode", "search")


class _Scraped:
    """Gauges computed when Prometheus scrapes: no work on the request path."""

    def __init__(self, server):
        self.server = server

    def collect(self):
        s = self.server
        cat = getattr(s, "catalog", None)
        if cat is not None:
            st = cat.stats()
            yield GaugeMetricFamily("skulens_catalog_products", "Products in the catalogue", value=st["products"])
            yield GaugeMetricFamily("skulens_graph_backlog", "Products the HNSW graph does not hold yet "
                                    "(scanned exactly meanwhile)", value=st["hnsw"]["unindexed"])
            yield GaugeMetricFamily("skulens_catalog_seq", "The catalogue's change sequence", value=st["seq"])
            lag = st["lag"]
            yield GaugeMetricFamily("skulens_replication_lag_seq", "Changes in the store this replica has not "
                                    "applied yet", value=lag["seq"])
            yield GaugeMetricFamily("skulens_replication_lag_seconds", "How long this replica has been behind "
                                    "the store (or cut off from it); 0 when current", value=lag["s"])
        enc = (getattr(s, "encoders", None) or {}).get("image")
        if enc is not None:
            yield GaugeMetricFamily("skulens_query_cache_hit_ratio", "Image query cache hits / lookups",
                                    value=enc.cache.stats()["hit_rate"])
        drift = getattr(s, "drift", None)
        if drift is not None:
            for name, v in drift.values().items():
                yield GaugeMetricFamily(f"skulens_drift_{name}", f"Query drift: {name.replace('_', ' ')} "
                                        "(monitoring/drift.py)", value=v)


class Metrics:
    def __init__(self, server=None):
        r = self.registry = CollectorRegistry()
        self.requests = Counter("skulens_requests", "RPCs by method and status code", ["method", "code"], registry=r)
        self.latency = Histogram("skulens_request_seconds", "RPC latency in the server", ["method"],
                                 buckets=LATENCY, registry=r)
        self.in_flight = Gauge("skulens_in_flight_requests", "RPCs being handled", registry=r)
        self.stages = Histogram("skulens_stage_seconds", "Server-side time of a search's stages", ["stage"],
                                buckets=LATENCY, registry=r)
        self.batch = Histogram("skulens_encoder_batch_size", "Images per encoder batch",
                               buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256), registry=r)
        self.commit = Histogram("skulens_sqlite_commit_seconds", "Durable SQLite commits (group commit)",
                                buckets=LATENCY, registry=r)
        self.auth_failures = Counter("skulens_auth_failures", "Refused calls by reason (missing, unknown, denied)",
                                     ["reason"], registry=r)
        for reason in ("missing", "unknown", "denied"):  # present from the start, at 0, for rate() and alerts
            self.auth_failures.labels(reason)
        if server is not None:
            r.register(_Scraped(server))
        self._http = None

    def serve(self, host: str, port: int) -> int:
        """Expose /metrics on host:port (0: a free port); returns the port."""
        self._http, _ = start_http_server(port, addr=host, registry=self.registry)
        return self._http.server_port

    def stop(self) -> None:
        if self._http is not None:
            self._http.shutdown()
            self._http.server_close()
            self._http = None

    def observed(self, fn, method: str, server_stream: bool):
        """fn (a gRPC behaviour) counted: code, latency, in flight; a search's stage timings."""
        latency, in_flight = self.latency.labels(method), self.in_flight
        # Label children bound once: labels() costs more than the increment it serves.
        stages = {stage: self.stages.labels(stage) for stage in STAGES}
        by_code: dict = {}

        def done(context, t0):
            code = context.code()
            name = "OK" if code is None else code.name
            counter = by_code.get(name)
            if counter is None:
                counter = by_code[name] = self.requests.labels(method, name)
            counter.inc()
            latency.observe(time.perf_counter() - t0)
            in_flight.dec()

        if server_stream:
            def stream(request, context):
                t0 = time.perf_counter()
                in_flight.inc()
                try:
                    yield from fn(request, context)
                finally:
                    done(context, t0)
            return stream

        def unary(request, context):
            t0 = time.perf_counter()
            in_flight.inc()
            try:
                response = fn(request, context)
                t = getattr(response, "timings", None)
                if t is not None and t.total_us:
                    for stage, child in stages.items():
                        us = getattr(t, f"{stage}_us")
                        if us:
                            child.observe(us / 1e6)
                return response
            finally:
                done(context, t0)
        return unary
