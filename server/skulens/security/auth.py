"""Access control: one server interceptor checks every call's bearer token against the key store.

`authorization: Bearer sk_...` in the call's metadata. No or an unknown key: UNAUTHENTICATED; a
known key whose role does not include the method's: PERMISSION_DENIED. Health and reflection stay
open unless configured (`auth_open`), so load balancers and grpcurl work without a key. Auth is on whenever the
key file holds a key. The caller's key id is available to the handler (`caller()`) for the audit
trail; tokens themselves are never logged.
"""

from __future__ import annotations

import contextlib
import contextvars

import grpc

from ..errors import InvalidArgument
from ..v1 import skulens_pb2 as pb
from .keys import KeyStore, allows
from .wire import around

SERVICE = pb.DESCRIPTOR.services_by_name["ProductSearch"].full_name
NEEDS = {"Search": "read", "SearchStream": "read", "GetProduct": "read", "Embed": "read", "Stats": "read",
         "SearchScene": "read", "SearchSceneStream": "read",
         "Upsert": "write", "UpsertStream": "write", "Delete": "write", "AddImages": "write",
         "RemoveImages": "write"}
OPENABLE = {"health": ("/grpc.health.v1.Health/",),
            "reflection": ("/grpc.reflection.v1alpha.ServerReflection/", "/grpc.reflection.v1.ServerReflection/")}

_caller: contextvars.ContextVar = contextvars.ContextVar("skulens_caller", default=(None, None))


def caller() -> tuple[str | None, str | None]:
    """(key id, role) of the call this thread is handling; (None, None) when auth is off."""
    return _caller.get()


def _refusal(handler, code, message):
    def refuse(request_or_iterator, context):
        context.abort(code, message)
    kind = (handler.request_streaming, handler.response_streaming)
    make = {(False, False): grpc.unary_unary_rpc_method_handler,
            (False, True): grpc.unary_stream_rpc_method_handler,
            (True, False): grpc.stream_unary_rpc_method_handler,
            (True, True): grpc.stream_stream_rpc_method_handler}[kind]
    return make(refuse, request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer)


def _as_caller(handler, who):
    """The same handler, run with `who` as the caller (a context variable of its thread)."""
    @contextlib.contextmanager
    def scope(context):
        token = _caller.set(who)
        try:
            yield
        finally:
            _caller.reset(token)

    def wrap(fn, server_stream):
        return None if fn is None else around(fn, server_stream, scope)
    return handler._replace(unary_unary=wrap(handler.unary_unary, False),
                            unary_stream=wrap(handler.unary_stream, True),
                            stream_unary=wrap(handler.stream_unary, False),
                            stream_stream=wrap(handler.stream_stream, True))


def open_prefixes(names: str) -> tuple[str, ...]:
    """"health,reflection" -> the method prefixes served without a key."""
    out = []
    for n in (x.strip() for x in names.split(",") if x.strip()):
        if n not in OPENABLE:
            raise InvalidArgument(f"auth_open {n!r}: choose from {', '.join(OPENABLE)} (or nothing)")
        out += OPENABLE[n]
    return tuple(out)


class AuthInterceptor(grpc.ServerInterceptor):
    def __init__(self, keys: KeyStore, on_failure=None, open_methods: str = "health,reflection"):
        self.keys = keys
        self.on_failure = on_failure or (lambda method, why: None)   # metrics
        self.open = open_prefixes(open_methods)

    def intercept_service(self, continuation, details):
        method = details.method
        handler = continuation(details)
        if handler is None or method.startswith(self.open) or not len(self.keys):
            return handler
        if method.startswith(f"/{SERVICE}/"):
            needed = NEEDS.get(method.rsplit("/", 1)[-1], "admin")
        else:  # health and reflection when closed: any key; anything else: admin
            needed = "read" if any(method.startswith(p) for ps in OPENABLE.values() for p in ps) else "admin"
        token = None
        for k, v in details.invocation_metadata or ():
            if k == "authorization" and v.startswith("Bearer "):
                token = v[len("Bearer "):].strip()
        if not token:
            self.on_failure(method, "missing")
            return _refusal(handler, grpc.StatusCode.UNAUTHENTICATED,
                            "this server needs an API key: metadata 'authorization: Bearer sk_...'")
        who = self.keys.identify(token)
        if who is None:
            self.on_failure(method, "unknown")
            return _refusal(handler, grpc.StatusCode.UNAUTHENTICATED, "unknown or revoked API key")
        if not allows(who[1], needed):
            self.on_failure(method, "denied")
            return _refusal(handler, grpc.StatusCode.PERMISSION_DENIED,
                            f"key {who[0]} has role {who[1]!r}; {method.rsplit('/', 1)[-1]} needs {needed!r}")
        return _as_caller(handler, who)
