"""`skulens route`: a stateless gRPC front end (the same proto) over a sharded catalogue.

Each shard is a set of replicas (`skulens serve --store ... --shard i/n`) holding one hash
partition of the products. A Search is fanned out to one replica of every shard at once and
the top k of their answers are merged; an image query is embedded once (Embed on one replica)
and sent on as a vector. A replica that answers UNAVAILABLE (or does not answer) is skipped
for a moment and the shard's next replica is asked, within the caller's deadline. A shard none
of whose replicas answers in time is named in `SearchResponse.missing_shards` and the answer is
the others' (partial); only when no shard answers is the call UNAVAILABLE. Caller errors
(INVALID_ARGUMENT, NOT_FOUND, auth, limits) come back as the replica gave them.

Writes, GetProduct and Embed go to any one replica: every replica writes to, and reads from,
the shared store, and each shard's replicas pick up their own partition from it. The caller's
metadata (API key, request id) travels with every call, so auth and audit are the replicas'.
"""

from __future__ import annotations

import json
import threading
import time
from concurrent import futures

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from .errors import InvalidArgument
from .fusion import Fusion
from .limits import MAX_STREAMS
from .security import wire
from .security.images import scrub
from .service import stream_hits
from .v1 import skulens_pb2 as pb
from .v1 import skulens_pb2_grpc as pb_grpc

DEFAULT_TIMEOUT_S = 30.0   # a call (or a stream's frame) without a deadline gets this one
EJECT_S = 1.0              # a replica that failed is skipped this long
_RETRY = {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.CANCELLED}
_DROP = ("grpc-", ":", "user-agent", "content-type", "te")  # transport metadata, not the caller's


class ShardDown(Exception):
    """No replica of a shard answered within the deadline."""


class Shard:
    """One partition's replicas: round-robin over the ones not ejected, failover on UNAVAILABLE."""

    def __init__(self, name: str, addresses: list[str], credentials=None, options=()):
        self.name, self.addresses = name, addresses
        chans = [grpc.secure_channel(a, credentials, options) if credentials else grpc.insecure_channel(a, options)
                 for a in addresses]
        self.channels, self.stubs = chans, [pb_grpc.ProductSearchStub(c) for c in chans]
        self._next, self._ejected = 0, [0.0] * len(addresses)
        self._lock = threading.Lock()

    def order(self) -> list[int]:
        """Replicas to try, healthy ones first, starting at the next in turn."""
        with self._lock:
            start = self._next
            self._next = (self._next + 1) % len(self.stubs)
        now = time.monotonic()
        idx = [(start + k) % len(self.stubs) for k in range(len(self.stubs))]
        return [i for i in idx if self._ejected[i] <= now] + [i for i in idx if self._ejected[i] > now]

    def call(self, method: str, request, metadata, deadline: float):
        last = None
        for i in self.order():
            left = deadline - time.monotonic()
            if left <= 0:
                break
            try:
                return getattr(self.stubs[i], method)(request, timeout=left, metadata=metadata)
            except grpc.RpcError as e:
                if e.code() not in _RETRY:
                    raise
                self._ejected[i] = time.monotonic() + EJECT_S
                last = e
        why = f"{last.code().name}: {last.details()}" if last is not None else "DEADLINE_EXCEEDED: no time left"
        raise ShardDown(f"{self.name}: {why}")

    def close(self) -> None:
        for c in self.channels:
            c.close()


def _metadata(context):
    return tuple((k, v) for k, v in context.invocation_metadata() if not k.startswith(_DROP))


def _deadline(context) -> float:
    """When this call must be answered; one without a deadline (a stream: none per frame) gets
    DEFAULT_TIMEOUT_S (grpc reports "none" as a huge number of seconds)."""
    left = context.time_remaining()
    return time.monotonic() + (DEFAULT_TIMEOUT_S if left is None or left > DEFAULT_TIMEOUT_S else left)


def _abort(context, e: Exception) -> None:
    """Backend errors reach the caller as the replica sent them; a shard down is UNAVAILABLE."""
    if isinstance(e, grpc.RpcError):
        context.abort(e.code(), e.details() or "")
    if isinstance(e, ShardDown):
        context.abort(grpc.StatusCode.UNAVAILABLE, str(e))
    context.abort(grpc.StatusCode.INVALID_ARGUMENT, scrub(str(e)))


_ERRORS = (grpc.RpcError, ShardDown, InvalidArgument)


def _forward(fn):
    def wrapper(self, request, context):
        try:
            return fn(self, request, context)
        except _ERRORS as e:
            _abort(context, e)
    wrapper.__name__ = fn.__name__
    return wrapper


class RouteService(pb_grpc.ProductSearchServicer):
    def __init__(self, shards: list[Shard], threads: int):
        self.shards = shards
        self.pool = futures.ThreadPoolExecutor(max_workers=max(4, threads), thread_name_prefix="skulens-fanout")
        self._any = 0

    def _one(self, method, request, context):
        """Any one replica (writes and store reads): shards in turn, then their replicas."""
        deadline, md = _deadline(context), _metadata(context)
        self._any += 1
        last = None
        for k in range(len(self.shards)):
            try:
                return self.shards[(self._any + k) % len(self.shards)].call(method, request, md, deadline)
            except ShardDown as e:
                last = e
        raise last

    def _search(self, request: pb.SearchRequest, context) -> pb.SearchResponse:
        t0 = time.perf_counter_ns()
        deadline, md = _deadline(context), _metadata(context)
        top_k = request.top_k or 10
        if request.query.WhichOneof("kind") == "image":  # embed once, not once per shard
            emb = self._one("Embed", pb.EmbedRequest(image=request.query.image), context)
            request = pb.SearchRequest.FromString(request.SerializeToString())
            request.query.vector.values[:] = emb.vector
        jobs = [(s, self.pool.submit(s.call, "Search", request, md, deadline)) for s in self.shards]
        out, hits, missing, seqs = pb.SearchResponse(), [], [], []
        for s, job in jobs:
            try:
                r = job.result()
            except ShardDown as e:
                missing.append(str(e))
                continue
            hits.extend(r.hits)
            seqs.append(r.seq)
            for f in ("decode_us", "preprocess_us", "encode_us", "search_us"):
                setattr(out.timings, f, max(getattr(out.timings, f), getattr(r.timings, f)))
        if len(missing) == len(self.shards):
            raise ShardDown("no shard answered: " + "; ".join(missing))
        hits.sort(key=lambda h: (-h.score, h.product_id))
        out.hits.extend(hits[:top_k])
        out.seq = min(seqs)
        out.missing_shards.extend(missing)
        out.timings.total_us = (time.perf_counter_ns() - t0) // 1000
        return out

    @_forward
    def Search(self, request, context):
        return self._search(request, context)

    def SearchStream(self, request_iterator, context):
        fusion = Fusion()
        try:
            for frame, req in enumerate(request_iterator):
                yield stream_hits(fusion, frame, self._search(req, context))
        except _ERRORS as e:
            _abort(context, e)

    def SearchScene(self, request, context):
        context.abort(grpc.StatusCode.UNIMPLEMENTED, "SearchScene is not routed over shards yet: send it to a "
                      "server that holds the whole catalogue (skulens serve without --shard)")

    def SearchSceneStream(self, request_iterator, context):
        self.SearchScene(None, context)

    @_forward
    def Upsert(self, request, context):
        return self._one("Upsert", request, context)

    @_forward
    def UpsertStream(self, request_iterator, context):
        """Each batch as its own Upsert (each is its own transaction either way)."""
        n, seq, done = 0, 0, 0
        try:
            for req in request_iterator:
                if not req.products:
                    continue
                r = self._one("Upsert", req, context)
                n, seq, done = n + r.upserted, r.seq, done + 1
        except _ERRORS:
            context.set_trailing_metadata((("skulens-committed-batches", str(done)),
                                           ("skulens-committed-seq", str(seq))))
            raise
        if n == 0:
            raise InvalidArgument("no products to upsert")
        return pb.UpsertResponse(seq=seq, upserted=n)

    @_forward
    def Delete(self, request, context):
        return self._one("Delete", request, context)

    @_forward
    def GetProduct(self, request, context):
        return self._one("GetProduct", request, context)

    @_forward
    def AddImages(self, request, context):
        return self._one("AddImages", request, context)

    @_forward
    def RemoveImages(self, request, context):
        return self._one("RemoveImages", request, context)

    @_forward
    def Embed(self, request, context):
        return self._one("Embed", request, context)

    @_forward
    def Stats(self, request, context):
        deadline, md = _deadline(context), _metadata(context)
        jobs = [(s, self.pool.submit(s.call, "Stats", request, md, deadline)) for s in self.shards]
        shards, total, dim = [], 0, 0
        for s, job in jobs:
            try:
                r = job.result()
                total, dim = total + r.products, r.dim
                shards.append({"shard": s.name, "products": r.products, **json.loads(r.json or "{}")})
            except ShardDown as e:
                shards.append({"shard": s.name, "error": str(e)})
        return pb.StatsResponse(products=total, dim=dim, json=json.dumps({"products": total, "shards": shards}))


class Router:
    """A started route server; `stop()` drains it."""

    def __init__(self, shards: list[list[str]], host: str = "127.0.0.1", port: int = 0, threads: int = 32,
                 tls_cert: str | None = None, tls_key: str | None = None, backend_ca: str | None = None):
        from .security import tls
        if not shards or not all(shards):
            raise InvalidArgument("route needs at least one shard with at least one replica address")
        backend = grpc.ssl_channel_credentials(open(backend_ca, "rb").read()) if backend_ca else None
        n = len(shards)
        self.shards = [Shard(f"{i}/{n}", a, backend) for i, a in enumerate(shards)]
        self.service = RouteService(self.shards, threads)
        self.grpc = grpc.server(futures.ThreadPoolExecutor(max_workers=threads + MAX_STREAMS,
                                                           thread_name_prefix="skulens-route"))
        self.grpc.add_generic_rpc_handlers((wire.handlers(self.service, MAX_STREAMS),))
        self.health = health.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self.grpc)
        name = pb.DESCRIPTOR.services_by_name["ProductSearch"].full_name
        reflection.enable_server_reflection([name, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
                                             reflection.SERVICE_NAME], self.grpc)
        creds = tls.server_credentials(tls_cert or "", tls_key or "", "")
        address = f"{host}:{port}"
        self.port = self.grpc.add_secure_port(address, creds) if creds else self.grpc.add_insecure_port(address)
        self.host = host
        self.grpc.start()
        self.health.set("", health_pb2.HealthCheckResponse.SERVING)
        self.health.set(name, health_pb2.HealthCheckResponse.SERVING)

    @classmethod
    def parse(cls, spec: str, **kw) -> "Router":
        """spec: 'a1,a2;b1,b2' (replicas comma-separated, shards by ';')."""
        return cls([[a.strip() for a in part.split(",") if a.strip()] for part in spec.split(";")], **kw)

    @property
    def target(self) -> str:
        return f"{self.host}:{self.port}"

    def stop(self, grace: float = 2.0) -> None:
        """Refuse new calls, give in-flight ones `grace` seconds, close the backends' channels."""
        self.grpc.stop(grace).wait(grace + 1)
        self.service.pool.shutdown(wait=False, cancel_futures=True)
        for s in self.shards:
            s.close()

    def wait(self) -> None:
        from .server import wait_for_signal
        wait_for_signal()
        self.stop()
