"""Running the service: configuration, health, reflection, graceful shutdown.

Configuration comes from, later winning: built-in defaults, a TOML file
(`--config`), environment variables `SKULENS_<KEY>` and command-line flags.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import tomllib
from concurrent import futures
from dataclasses import dataclass, fields

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from .catalog import Catalog
from .errors import InvalidArgument
from .service import ProductSearch
from .v1 import skulens_pb2 as pb
from .v1 import skulens_pb2_grpc as pb_grpc

log = logging.getLogger("skulens.server")

SERVICE = pb.DESCRIPTOR.services_by_name["ProductSearch"].full_name


@dataclass
class Config:
    data: str = "data"                 # catalogue folder
    dim: int = 256
    host: str = "127.0.0.1"
    port: int = 50051                  # 0 picks a free port
    workers: int = 16                  # gRPC handler threads (the kernel and hnswlib release the GIL)
    max_message_mb: int = 8
    grace_s: float = 10.0              # graceful shutdown: in-flight calls get this long
    storage: str = "fp32"
    M: int = 16
    ef_construction: int = 100
    ef: int = 64
    model_repo: str = ""               # folder of ONNX encoders; empty: vector queries only
    triton: str = ""                   # encoders' runtime: "" ONNX Runtime in process, "host:port" a Triton
                                       # server's gRPC, "start": one started here on model_repo

    @classmethod
    def load(cls, path: str | None = None, env=os.environ, **flags) -> "Config":
        values: dict = {}
        if path:
            with open(path, "rb") as f:
                values.update(tomllib.load(f).get("server", {}))
        types = {f.name: f.type for f in fields(cls)}
        for name in types:
            v = env.get(f"SKULENS_{name.upper()}")
            if v is not None:
                values[name] = v
        values.update({k: v for k, v in flags.items() if v is not None})
        unknown = set(values) - set(types)
        if unknown:
            raise InvalidArgument(f"unknown configuration keys {sorted(unknown)}")
        conv = {"int": int, "float": float, "str": str}
        try:
            return cls(**{k: conv[types[k]](v) for k, v in values.items()})
        except (TypeError, ValueError) as e:
            raise InvalidArgument(f"bad configuration: {e}") from None


class Server:
    """A started gRPC server over one catalogue; `stop()` drains and closes it."""

    def __init__(self, config: Config, encoders=None):
        self.config = config
        mb = config.max_message_mb * 1024 * 1024
        self.grpc = grpc.server(
            futures.ThreadPoolExecutor(max_workers=config.workers, thread_name_prefix="skulens-rpc"),
            options=[("grpc.max_receive_message_length", mb), ("grpc.max_send_message_length", mb),
                     ("grpc.so_reuseport", 0)])
        self.health = health.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self.grpc)
        reflection.enable_server_reflection(
            [SERVICE, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name, reflection.SERVICE_NAME],
            self.grpc)
        # Up at once, answering UNAVAILABLE (and health NOT_SERVING) until the
        # catalogue is loaded and the encoders are warm.
        self.service = ProductSearch(None)
        pb_grpc.add_ProductSearchServicer_to_server(self.service, self.grpc)
        self._set_health(health_pb2.HealthCheckResponse.NOT_SERVING)
        self.port = self.grpc.add_insecure_port(f"{config.host}:{config.port}")
        if self.port == 0:
            raise OSError(f"cannot listen on {config.host}:{config.port}")
        self.grpc.start()
        try:
            self.encoders = encoders if encoders is not None else {}
            text = self.encoders.get("text")
            self.catalog = Catalog.open(config.data, config.dim, storage=config.storage, M=config.M,
                                        ef_construction=config.ef_construction, ef=config.ef,
                                        text_dim=text.dim if text is not None and text.dim != config.dim else None)
            for e in self.encoders.values():
                e.warm_up()
        except BaseException:
            self.grpc.stop(0)
            raise
        self.service.encoders = self.encoders
        self.service.catalog = self.catalog
        self._set_health(health_pb2.HealthCheckResponse.SERVING)
        self._stopped = threading.Event()
        log.info("serving %s on %s:%d (%d products)", SERVICE, config.host, self.port, len(self.catalog))

    def _set_health(self, status) -> None:
        self.health.set("", status)
        self.health.set(SERVICE, status)

    @property
    def target(self) -> str:
        return f"{self.config.host}:{self.port}"

    def stop(self, grace: float | None = None) -> None:
        """Refuse new calls, let in-flight ones finish (up to grace s), close the catalogue."""
        if self._stopped.is_set():
            return
        self._stopped.set()
        self.health.enter_graceful_shutdown()
        self.grpc.stop(self.config.grace_s if grace is None else grace).wait()
        self.catalog.close()
        log.info("stopped")

    def wait(self) -> None:
        """Block until SIGINT/SIGTERM, then stop gracefully."""
        done = threading.Event()
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, lambda *_: done.set())
        done.wait()
        self.stop()
