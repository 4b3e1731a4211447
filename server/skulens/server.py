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

from . import affinity
from .aio import AioServer
from .catalog import Catalog
from .errors import InvalidArgument
from .limits import IMAGE_FORMATS, MAX_PIXELS, MAX_STREAMS
from .security import tls, wire
from .security.audit import FILE as AUDIT_FILE, AuditLog
from .security.auth import AuthInterceptor
from .security.images import ImagePolicy
from .security.keys import FILE as KEYS_FILE, KeyStore
from .security.limits import Limits
from .monitoring.drift import Drift
from .monitoring.metrics import Metrics
from .service import ProductSearch
from .v1 import skulens_pb2 as pb

log = logging.getLogger("skulens.server")

SERVICE = pb.DESCRIPTOR.services_by_name["ProductSearch"].full_name


@dataclass
class Config:
    data: str = "data"                 # catalogue folder
    dim: int = 256
    host: str = "127.0.0.1"
    port: int = 50051                  # 0 picks a free port
    threads: int = 16                  # gRPC handler threads (the kernel and hnswlib release the GIL)
    workers: int = 1                   # server processes on the port, replicas of one store (cli/workers.py)
    store: str = ""                    # the store of record when shared: a postgresql:// URL or a SQLite
                                       # file; "": catalog.db in the data folder, this process's alone
    shard: str = ""                    # "i/n": hold only partition i of n of the products (needs store)
    encoder_threads: int = 0           # ONNX Runtime threads for batches (upserts); 0: the usable cores
    encoder_spin: int = 0              # 1: queries on ORT's spinning pool (lower lone latency, ~2.5x CPU)
    max_lag_s: float = 30.0            # health is NOT_SERVING while this replica trails the store longer
    reuse_port: int = 0                # SO_REUSEPORT on the listening port (set for --workers)
    server: str = "sync"               # "sync": grpcio's thread-pool server; "aio": grpc.aio (aio.py)
    cpus: str = ""                     # pin the process to these CPUs ("1", "0-3"; affinity.py); "": as is
    max_message_mb: int = 8
    grace_s: float = 10.0              # graceful shutdown: in-flight calls get this long
    storage: str = "fp32"
    M: int = 16
    ef_construction: int = 100
    ef: int = 64
    model_repo: str = ""               # folder of ONNX encoders; empty: vector queries only
    triton: str = ""                   # encoders' runtime: "" ONNX Runtime in process, "host:port" a Triton
                                       # server's gRPC, "start": one started here on model_repo
    max_streams: int = MAX_STREAMS     # open SearchStream/UpsertStream calls, on threads of their own
    image_formats: str = ",".join(IMAGE_FORMATS)   # decoded image formats (Pillow names); others refused
    max_image_pixels: int = MAX_PIXELS
    keys: str = ""                     # API key file (skulens keys ...); empty: keys.json in the data folder.
                                       # Auth is on whenever it holds a key
    auth_open: str = "health,reflection"   # served without a key even when auth is on ("" : nothing)
    tls_cert: str = ""                 # PEM certificate chain and key of the server: TLS on the port
    tls_key: str = ""
    tls_client_ca: str = ""            # PEM CA bundle: clients must present a certificate it signed (mTLS)
    audit: str = ""                    # the audit trail of every write (security/audit.py); empty:
                                       # audit.jsonl in the data folder; "off": none
    key_rate: float = 0.0              # calls a second per API key (per peer without auth); 0: no limit
    key_burst: int = 0                 # calls a caller may make at once above the rate (0: = rate)
    key_concurrency: int = 0           # calls (streams included) in flight per caller; 0: no limit
    metrics_port: int = -1             # Prometheus /metrics on this port (0: a free one); -1: off
    drift_window: int = 1000           # queries in the drift reference and in its rolling window

    def keys_path(self) -> str:
        return self.keys or os.path.join(self.data, KEYS_FILE)

    def audit_path(self) -> str | None:
        return None if self.audit == "off" else self.audit or os.path.join(self.data, AUDIT_FILE)

    def image_policy(self) -> ImagePolicy:
        return ImagePolicy(ImagePolicy.parse_formats(self.image_formats), max_pixels=self.max_image_pixels)

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
        policy = config.image_policy()  # a bad image_formats setting is refused before anything starts
        if config.server not in ("sync", "aio"):
            raise InvalidArgument(f"server must be 'sync' or 'aio', got {config.server!r}")
        affinity.pin(config.cpus)       # before the server's threads start: they inherit it
        # Streams hold a thread each for their whole life: the pool has room for max_streams of them
        # beside the unary workers, and wire.handlers refuses streams past the cap.
        os.makedirs(config.data, mode=0o700, exist_ok=True)
        self.keys = KeyStore(config.keys_path())
        self.audit = AuditLog(config.audit_path()) if config.audit_path() else None
        self.catalog, self.encoders = None, {}
        self.metrics, self.drift = Metrics(self), Drift(config.drift_window)
        credentials = tls.server_credentials(config.tls_cert, config.tls_key, config.tls_client_ca)
        pool = futures.ThreadPoolExecutor(max_workers=config.threads + config.max_streams,
                                          thread_name_prefix="skulens-rpc")
        interceptors = [AuthInterceptor(self.keys, lambda method, why: self.metrics.auth_failures.labels(why).inc(),
                                        config.auth_open)]
        options = [("grpc.max_receive_message_length", mb), ("grpc.max_send_message_length", mb),
                   ("grpc.so_reuseport", 1 if config.reuse_port else 0)]
        if config.server == "aio":
            self.grpc = AioServer(pool, interceptors, options, catalog=lambda: self.catalog)
        else:
            self.grpc = grpc.server(pool, interceptors=interceptors, options=options)
        self.health = health.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self.grpc)
        reflection.enable_server_reflection(
            [SERVICE, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name, reflection.SERVICE_NAME],
            self.grpc)
        # Up at once, answering UNAVAILABLE (and health NOT_SERVING) until the
        # catalogue is loaded and the encoders are warm.
        self.service = ProductSearch(None)
        self.limits = Limits(config.key_rate, config.key_burst, config.key_concurrency)
        self.grpc.add_generic_rpc_handlers((wire.handlers(self.service, config.max_streams, self.audit,
                                                          self.metrics, self.limits),))
        self._set_health(health_pb2.HealthCheckResponse.NOT_SERVING)
        address = f"{config.host}:{config.port}"
        self.port = (self.grpc.add_secure_port(address, credentials) if credentials is not None
                     else self.grpc.add_insecure_port(address))
        if self.port == 0:
            raise OSError(f"cannot listen on {config.host}:{config.port}")
        self.grpc.start()
        try:
            self.encoders = encoders if encoders is not None else {}
            if "image" in self.encoders:
                self.encoders["image"].policy = policy
            text = self.encoders.get("text")
            self.catalog = Catalog.open(config.data, config.dim, storage=config.storage, M=config.M,
                                        ef_construction=config.ef_construction, ef=config.ef,
                                        on_commit=self.metrics.commit.observe, store=config.store or None,
                                        shard=config.shard or None,
                                        text_dim=text.dim if text is not None and text.dim != config.dim else None)
            for e in self.encoders.values():
                e.warm_up()
        except BaseException:
            self.grpc.stop(0)
            if self.audit is not None:
                self.audit.close()
            raise
        self.service.encoders = self.encoders
        self.service.metrics, self.service.drift = self.metrics, self.drift
        self.service.catalog = self.catalog
        self.metrics_port = self.metrics.serve(config.host, config.metrics_port) if config.metrics_port >= 0 else None
        self._set_health(health_pb2.HealthCheckResponse.SERVING)
        self._stopped = threading.Event()
        if self.catalog.shared:
            threading.Thread(target=self._watch_lag, name="skulens-lag", daemon=True).start()
        log.info("serving %s on %s:%d (%d products)", SERVICE, config.host, self.port, len(self.catalog))

    def _watch_lag(self) -> None:
        """Health follows replication: NOT_SERVING while this replica trails the store (or has
        lost it) for longer than max_lag_s, so balancers send its traffic elsewhere."""
        serving = True
        while not self._stopped.wait(0.2):
            lag = self.catalog.lag()
            ok = lag["s"] <= self.config.max_lag_s
            if ok != serving:
                serving = ok
                log.warning("replica %s: %.1f s behind the store (%s); health %s", self.target, lag["s"],
                            lag["error"] or f"{lag['seq']} changes", "SERVING" if ok else "NOT_SERVING")
                self._set_health(health_pb2.HealthCheckResponse.SERVING if ok
                                 else health_pb2.HealthCheckResponse.NOT_SERVING)

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
        grace = self.config.grace_s if grace is None else grace
        # grpcio's stop event is not always set after a stream that broke mid-message (seen with
        # grpcio 1.81): wait for it no longer than the grace period, then close the catalogue anyway.
        if not self.grpc.stop(grace).wait(grace + 1.0):
            log.warning("gRPC did not finish stopping within %.1f s; closing the catalogue anyway", grace + 1.0)
        self.catalog.close()
        if self.audit is not None:
            self.audit.close()
        self.metrics.stop()
        log.info("stopped")

    def wait(self) -> None:
        """Block until SIGINT/SIGTERM, then stop gracefully."""
        wait_for_signal()
        self.stop()


def wait_for_signal() -> None:
    """Block until SIGINT or SIGTERM."""
    done = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: done.set())
    done.wait()
