"""`skulens serve`: the gRPC server over a catalogue folder, encoders in process or on Triton."""

from __future__ import annotations

import sys


def cmd_serve(args) -> int:
    from .. import encode
    from ..server import Config, Server
    cfg = Config.load(args.config, data=args.data, port=args.port, host=args.host, model_repo=args.model_repo,
                      dim=args.dim, triton=args.triton, keys=args.keys, tls_cert=args.server_tls_cert,
                      tls_key=args.server_tls_key, tls_client_ca=args.tls_client_ca, metrics_port=args.metrics_port,
                      server=args.server, cpus=args.cpus, store=args.store, shard=args.shard,
                      workers=args.workers, max_lag_s=args.max_lag_s)
    if cfg.workers != 1:
        from . import workers
        return workers.run(cfg)
    from ..encode.triton import TritonServer, TritonUnavailable
    triton = None
    try:
        if cfg.triton == "start":
            if not cfg.model_repo:
                raise TritonUnavailable("--triton start needs --model-repo")
            triton = TritonServer(cfg.model_repo).start()
            print(f"Triton serving {', '.join(triton.models)} on {triton.url}", flush=True)
        encs = encode.load(cfg.model_repo, threads=cfg.encoder_threads or None, spin=bool(cfg.encoder_spin),
                           triton=triton.url if triton else cfg.triton or None) \
            if cfg.model_repo else {}
    except (TritonUnavailable, ConnectionError, FileNotFoundError, ValueError) as e:
        # The encoders' runtime cannot be had, or a model folder cannot be read (ValueError: e.g. a
        # broken objectness.json): say why in one line, nothing started.
        if triton is not None:
            triton.stop()
        print(f"skulens serve: {e}", file=sys.stderr)
        return 2
    try:
        if "image" in encs and args.dim is None and cfg.dim != encs["image"].dim:
            cfg.dim = encs["image"].dim
        s = Server(cfg, encoders=encs)
        runtime = f"Triton at {triton.url if triton else cfg.triton}" if cfg.triton else "ONNX Runtime"
        print(f"skulens serving on {s.target} ({len(s.catalog)} products, encoders: {sorted(encs) or 'none'} "
              f"on {runtime})", flush=True)
        if s.metrics_port is not None:
            print(f"metrics on http://{cfg.host}:{s.metrics_port}/metrics", flush=True)
        if not len(s.keys):
            print(f"WARNING: no API keys in {cfg.keys_path()}: ANY client that reaches {s.target} can read, "
                  "upsert and delete. Add one with `skulens keys add --role admin`.", file=sys.stderr, flush=True)
        if not (cfg.tls_cert or s.target.startswith(("127.", "localhost", "[::1]"))):
            print("WARNING: plaintext gRPC on a non-loopback address: give --tls-cert/--tls-key",
                  file=sys.stderr, flush=True)
        s.wait()
    finally:
        if triton is not None:
            triton.stop()
    return 0


def cmd_route(args) -> int:
    """skulens route: the stateless front end over shards (route.py)."""
    from ..route import Router
    r = Router.parse(args.shards, host=args.host, port=args.port, threads=args.threads,
                     tls_cert=args.server_tls_cert, tls_key=args.server_tls_key, backend_ca=args.backend_tls_ca)
    print(f"skulens routing on {r.target} over {len(r.shards)} shard(s): "
          f"{'; '.join(','.join(s.addresses) for s in r.shards)}", flush=True)
    r.wait()
    return 0


def cmd_keys(args) -> int:
    """skulens keys add --role R | list | revoke ID, on the key file of a catalogue folder."""
    import json
    import os
    from ..errors import SkulensError
    from ..security.keys import FILE, KeyStore
    path = args.keys or os.path.join(args.data, FILE)
    if args.action == "add":
        os.makedirs(os.path.dirname(os.path.abspath(path)), mode=0o700, exist_ok=True)
    from ..security.audit import FILE as AUDIT, AuditLog
    who = f"cli:{os.environ.get('USER') or os.getuid()}"
    try:
        store = KeyStore(path)
        if args.action == "add":
            kid, key = store.add(args.role, args.note)
            _audit(AuditLog, os.path.join(args.data, AUDIT), "keys.add", who, {"key": kid, "role": args.role})
            print(f"key {kid} ({args.role}); shown once, keep it secret:\n{key}")
        elif args.action == "list":
            print(json.dumps(store.list(), indent=1))
        else:
            if not args.id:
                print("skulens keys revoke: give the key id", file=sys.stderr)
                return 2
            store.revoke(args.id)
            _audit(AuditLog, os.path.join(args.data, AUDIT), "keys.revoke", who, {"key": args.id})
            print(f"revoked {args.id}")
    except SkulensError as e:
        print(f"skulens keys: {e}", file=sys.stderr)
        return 2
    return 0


def _audit(cls, path: str, action: str, who: str, what: dict) -> None:
    """Key management is an admin action: it joins the server's audit trail (shared under a lock)."""
    import os
    if os.path.isdir(os.path.dirname(os.path.abspath(path))):
        log = cls(path)
        log.record(action, "OK", who=who, what=what)
        log.close()


def cmd_audit(args) -> int:
    """skulens audit verify: 0 when the chain is intact, 1 naming the first bad line."""
    import os
    from ..security.audit import FILE, verify
    path = args.file or os.path.join(args.data, FILE)
    if not os.path.exists(path):
        print(f"skulens audit: no audit trail at {path}", file=sys.stderr)
        return 2
    ok, line, why = verify(path)
    if ok:
        print(f"{path}: {line} records, chain intact")
        return 0
    print(f"{path}: line {line} {why}", file=sys.stderr)
    return 1
