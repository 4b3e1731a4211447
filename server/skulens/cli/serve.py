"""`skulens serve`: the gRPC server over a catalogue folder, encoders in process or on Triton."""

from __future__ import annotations

import sys


def cmd_serve(args) -> int:
    from .. import encode
    from ..server import Config, Server
    cfg = Config.load(args.config, data=args.data, port=args.port, host=args.host, model_repo=args.model_repo,
                      dim=args.dim, triton=args.triton)
    from ..encode.triton import TritonServer, TritonUnavailable
    triton = None
    try:
        if cfg.triton == "start":
            if not cfg.model_repo:
                raise TritonUnavailable("--triton start needs --model-repo")
            triton = TritonServer(cfg.model_repo).start()
            print(f"Triton serving {', '.join(triton.models)} on {triton.url}", flush=True)
        encs = encode.load(cfg.model_repo, triton=triton.url if triton else cfg.triton or None) \
            if cfg.model_repo else {}
    except (TritonUnavailable, ConnectionError, FileNotFoundError) as e:
        # The encoders' runtime cannot be had: say why in one line, nothing started.
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
        s.wait()
    finally:
        if triton is not None:
            triton.stop()
    return 0
