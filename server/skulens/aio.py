"""The service on grpc.aio, behind the interface of grpcio's sync server (`server="aio"`).

Why: a sync server hands every call from its polling thread to a pool thread and back. On
grpc.aio a call that is cheap and GIL-free at its core (a Search by vector or product id: the
walk releases the GIL and takes well under a millisecond) runs inline on the event loop, with no
hand-off. Everything else, the encoders, writes, streams, health and reflection, runs the same sync
handlers as the sync server on a thread pool (grpc.aio's migration pool), and so does a Search
that could hold the loop for long (an image or a text to encode, an exact scan of a big catalogue,
or any search while a write holds the indexes).

The handlers are the sync server's (wire.handlers, auth, limits, metrics): `_Inline` gives them the
sync ServicerContext they expect on top of grpc.aio's, so one code path serves both servers.
"""

from __future__ import annotations

import asyncio
import threading
from concurrent import futures

import grpc

from .v1 import skulens_pb2 as pb

SEARCH = f"/{pb.DESCRIPTOR.services_by_name['ProductSearch'].full_name}/Search"
# A Search of mode exact scans every row: inline only where that takes well under a millisecond.
INLINE_EXACT_ROWS = 20_000


class _Abort(Exception):
    """What _Inline.abort raises: the call ends with the recorded status (as grpc's abort does)."""


class _Inline:
    """The sync ServicerContext API over a grpc.aio one, for a sync handler run inline or on a
    thread; abort() records the status, which the async caller then sends."""

    __slots__ = ("_ctx", "status")

    def __init__(self, ctx):
        self._ctx = ctx
        self.status = None

    def abort(self, code, details=""):
        self.status = (code, details)
        raise _Abort(details)

    def code(self):
        return self.status[0] if self.status else self._ctx.code()

    def time_remaining(self):
        return self._ctx.time_remaining()

    def invocation_metadata(self):
        return self._ctx.invocation_metadata()

    def peer(self):
        return self._ctx.peer()

    def set_trailing_metadata(self, md):
        self._ctx.set_trailing_metadata(md)

    def __getattr__(self, name):  # auth_context, peer_identities, ...: grpc.aio's own
        return getattr(self._ctx, name)


class _Migrated:
    """grpc.aio's context for sync handlers on its pool lacks code(): this one keeps the status
    an abort set, for the metrics (everything else is grpc.aio's)."""

    __slots__ = ("_ctx", "_code")

    def __init__(self, ctx):
        self._ctx, self._code = ctx, None

    def abort(self, code, details=""):
        self._code = code
        self._ctx.abort(code, details)

    def code(self):
        return self._code

    def __getattr__(self, name):
        return getattr(self._ctx, name)


def _on_pool(handler):
    """The sync handler as grpc.aio runs it on its pool, with `_Migrated` contexts."""
    def wrap(fn, streamed):
        if fn is None:
            return None
        if streamed:
            def stream(request, context):
                yield from fn(request, _Migrated(context))
            return stream
        return lambda request, context: fn(request, _Migrated(context))
    return handler._replace(unary_unary=wrap(handler.unary_unary, False),
                            unary_stream=wrap(handler.unary_stream, True),
                            stream_unary=wrap(handler.stream_unary, False),
                            stream_stream=wrap(handler.stream_stream, True))


def cheap(request, rows: int, writing: bool = False) -> bool:
    """Whether a Search can run on the event loop: a vector or product id query (nothing to
    encode) that does not scan a big catalogue row by row, at a moment when no write holds the
    indexes (the indexer adds graph batches under the write lock: waiting for it inline would
    stall every call on the loop, health checks included)."""
    if not isinstance(request, pb.SearchRequest) or writing:
        return False  # an unparseable request: the sync handler refuses it, on the pool
    if request.query.WhichOneof("kind") not in ("vector", "product_id"):
        return False
    if request.min_seq:
        return False  # it may wait for the follower
    return request.mode != pb.MODE_EXACT or rows <= INLINE_EXACT_ROWS


class _Router(grpc.aio.ServerInterceptor):
    """Runs the sync interceptors, then turns the Search handler into a coroutine that calls the
    sync one inline (cheap requests) or on the pool."""

    def __init__(self, interceptors, pool, catalog):
        self.interceptors, self.pool, self.catalog = list(interceptors), pool, catalog

    async def intercept_service(self, continuation, details):
        handler = await continuation(details)
        for ic in self.interceptors:
            handler = ic.intercept_service(lambda _d, h=handler: h, details)
        if handler is None:
            return None
        if details.method != SEARCH or handler.unary_unary is None:
            return _on_pool(handler)
        fn, pool, catalog = handler.unary_unary, self.pool, self.catalog

        async def search(request, context):
            ctx = _Inline(context)
            cat = catalog()
            try:
                if cat is not None and cheap(request, len(cat), cat.writing()):
                    return fn(request, ctx)
                return await asyncio.get_running_loop().run_in_executor(pool, fn, request, ctx)
            except _Abort:
                await context.abort(*ctx.status)
        return handler._replace(unary_unary=search)


class AioServer:
    """grpc.aio on an event loop thread of its own, with the methods of grpc.Server that
    server.Server calls (add handlers and ports, start, stop)."""

    def __init__(self, pool: futures.ThreadPoolExecutor, interceptors=(), options=(), catalog=lambda: None):
        self.pool = pool
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name="skulens-aio", daemon=True)
        self._thread.start()

        async def make():
            return grpc.aio.server(migration_thread_pool=pool, options=list(options),
                                   interceptors=[_Router(interceptors, pool, catalog)])
        self.server = self._run(make())

    def _run(self, coro, timeout=None):
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def _call(self, fn, *args):
        async def call():
            return fn(*args)
        return self._run(call())

    def add_generic_rpc_handlers(self, handlers) -> None:
        self._call(self.server.add_generic_rpc_handlers, handlers)

    def add_registered_method_handlers(self, service: str, handlers) -> None:
        self._call(self.server.add_registered_method_handlers, service, handlers)

    def add_insecure_port(self, address: str) -> int:
        return self._call(self.server.add_insecure_port, address)

    def add_secure_port(self, address: str, credentials) -> int:
        return self._call(self.server.add_secure_port, address, credentials)

    def start(self) -> None:
        self._run(self.server.start())

    def stop(self, grace: float | None) -> threading.Event:
        """Like grpc.Server.stop: refuse new calls, give in-flight ones `grace` s; the event is set
        once the server has stopped."""
        done = threading.Event()

        async def stop():
            await self.server.stop(grace)
            done.set()
        # The loop keeps running (its thread is a daemon): handlers still on the pool may wait on it
        # (a cancelled stream's next message); with the loop stopped they would wait forever, and the
        # process would hang at exit joining them.
        asyncio.run_coroutine_threadsafe(stop(), self.loop)
        return done
