"""What every RPC of the service shares: its error mapping, and proto -> numpy.

Skulens errors carry their gRPC code (errors.py); anything else is INTERNAL, logged, with the
server still up. The read RPCs (service.py) and the write RPCs (writes.py) both use these.
"""

from __future__ import annotations

import functools
import logging

import grpc
import numpy as np

from .errors import SkulensError, Unavailable
from .security.images import scrub

log = logging.getLogger("skulens.service")


def rpc(fn):
    """Turn skulens errors into their gRPC status; anything else is INTERNAL
    with the server still up."""
    @functools.wraps(fn)
    def wrapper(self, request, context):
        try:
            if self.catalog is None:
                raise Unavailable("the server is still loading its catalogue")
            return fn(self, request, context)
        except SkulensError as e:
            context.abort(getattr(grpc.StatusCode, e.grpc_code), scrub(str(e)))
        except Exception as e:  # noqa: BLE001 - reported to the caller, logged here
            log.exception("%s failed", fn.__name__)
            context.abort(grpc.StatusCode.INTERNAL, scrub(f"{type(e).__name__}: {e}"))
    return wrapper


def floats(values) -> np.ndarray:
    """A protobuf repeated float as float32 (fromiter: the fastest path from upb's container)."""
    return np.fromiter(values, np.float32, len(values))
