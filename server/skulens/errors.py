"""Error hierarchy shared by the index, the catalogue and the service.

Each class says which gRPC status it becomes, so the service maps errors in
one place instead of guessing from messages.
"""


class SkulensError(Exception):
    """Base of every error skulens raises on purpose."""

    grpc_code = "INTERNAL"


class InvalidArgument(SkulensError, ValueError):
    """The caller sent something unusable (shape, dtype, NaN, bad k, bad filter)."""

    grpc_code = "INVALID_ARGUMENT"


class NotFound(SkulensError, KeyError):
    """An id the caller named does not exist."""

    grpc_code = "NOT_FOUND"

    def __str__(self) -> str:  # KeyError would repr() the message
        return str(self.args[0]) if self.args else ""


class Unavailable(SkulensError):
    """Not ready, or held by someone else (a catalogue open in another process)."""

    grpc_code = "UNAVAILABLE"


class CorruptCatalog(SkulensError):
    """Stored data is damaged beyond what skulens repairs by itself (the database)."""

    grpc_code = "DATA_LOSS"


class Unimplemented(SkulensError):
    """The server lacks what the request needs (an encoder that is not loaded)."""

    grpc_code = "UNIMPLEMENTED"


class DeadlineExceeded(SkulensError):
    """The caller's deadline passed before the work could be done."""

    grpc_code = "DEADLINE_EXCEEDED"


class ResourceExhausted(SkulensError):
    """A request over a size limit (image bytes, batch size)."""

    grpc_code = "RESOURCE_EXHAUSTED"
