"""The service's method handlers, built from the proto's descriptor, with two defences that
grpcio's generated `add_..._to_server` lacks:

- bytes that are not a valid message are INVALID_ARGUMENT, naming the message type (grpcio
  answers INTERNAL "Exception deserializing request!" when a deserializer raises, so ours never
  raises: it returns an `Unparseable` that the handler refuses);
- open streams are capped (`max_streams`): a long-lived SearchStream holds a handler thread for
  its whole life, so without a cap a few idle scanners starve unary calls and the health check.
  The server's pool has room for the cap plus its unary workers; a stream past the cap is
  RESOURCE_EXHAUSTED at once.
"""

from __future__ import annotations

import functools
import threading

import grpc

from ..errors import InvalidArgument
from ..v1 import skulens_pb2 as pb
from .images import scrub

SERVICE = pb.DESCRIPTOR.services_by_name["ProductSearch"]


class Unparseable:
    """What a request deserializer returns for bytes that do not parse."""

    __slots__ = ("what",)

    def __init__(self, what: str):
        self.what = what


class UnparseableMessage(InvalidArgument):
    """Raised inside a request stream when one of its messages does not parse."""


def tolerant(cls):
    name = cls.DESCRIPTOR.name

    def parse(data: bytes):
        try:
            return cls.FromString(data)
        except Exception as e:  # noqa: BLE001 - DecodeError and friends: the caller's bytes
            return Unparseable(f"the request is not a valid {name} ({len(data)} bytes): {scrub(str(e))}")
    return parse


def around(fn, server_stream: bool, scope):
    """fn (a gRPC behaviour) run inside `scope(context)`, a context manager, for as long as the call
    lasts: to the end of its stream for a streamed answer."""
    if server_stream:
        @functools.wraps(fn)
        def stream(request, context):
            with scope(context):
                yield from fn(request, context)
        return stream

    @functools.wraps(fn)
    def unary(request, context):
        with scope(context):
            return fn(request, context)
    return unary


def _checked(requests):
    for r in requests:
        if isinstance(r, Unparseable):
            raise UnparseableMessage(r.what)
        yield r


def handlers(servicer, max_streams: int, audit=None, metrics=None, limits=None) -> grpc.GenericRpcHandler:
    """A generic handler serving every RPC of skulens.v1.ProductSearch on `servicer`; with
    `audit` (an AuditLog), every write leaves a record in it; with `metrics`, every call is counted;
    with `limits` (security.limits.Limits), each caller's calls are capped."""
    from .audit import AUDITED, audited
    from .auth import caller
    streams = threading.BoundedSemaphore(max_streams)
    out = {}
    for m in SERVICE.methods:
        req, resp = getattr(pb, m.input_type.name), getattr(pb, m.output_type.name)
        fn = getattr(servicer, m.name)
        if audit is not None and m.name in AUDITED:
            fn = audited(fn, m.name, audit, m.client_streaming, lambda: caller()[0])
        kind = (m.client_streaming, m.server_streaming)
        make = {(False, False): grpc.unary_unary_rpc_method_handler,
                (False, True): grpc.unary_stream_rpc_method_handler,
                (True, False): grpc.stream_unary_rpc_method_handler,
                (True, True): grpc.stream_stream_rpc_method_handler}[kind]
        wrapped = _guard(fn, kind, streams, max_streams)
        if limits is not None and limits.active:
            wrapped = limits.limited(wrapped, m.server_streaming)
        if metrics is not None:
            wrapped = metrics.observed(wrapped, m.name, m.server_streaming)
        out[m.name] = make(wrapped, request_deserializer=tolerant(req), response_serializer=resp.SerializeToString)
    return grpc.method_handlers_generic_handler(SERVICE.full_name, out)


def _guard(fn, kind, streams, max_streams):
    client_stream, server_stream = kind

    def admit(context) -> None:
        if not streams.acquire(blocking=False):
            context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED,
                          f"{max_streams} streams are open on this server; retry later")

    if not client_stream and not server_stream:
        @functools.wraps(fn)
        def unary(request, context):
            if isinstance(request, Unparseable):
                context.abort(grpc.StatusCode.INVALID_ARGUMENT, request.what)
            return fn(request, context)
        return unary
    if not client_stream:  # unary request, streamed answer
        @functools.wraps(fn)
        def unary_stream(request, context):
            if isinstance(request, Unparseable):
                context.abort(grpc.StatusCode.INVALID_ARGUMENT, request.what)
            admit(context)
            try:
                yield from fn(request, context)
            finally:
                streams.release()
        return unary_stream
    if not server_stream:  # streamed requests, one answer
        @functools.wraps(fn)
        def stream_unary(requests, context):
            admit(context)
            try:
                return fn(_checked(requests), context)
            finally:
                streams.release()
        return stream_unary

    @functools.wraps(fn)
    def stream_stream(requests, context):
        admit(context)
        try:
            yield from fn(_checked(requests), context)
        finally:
            streams.release()
    return stream_stream
