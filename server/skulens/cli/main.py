"""The `skulens` command: serve, search, upsert, ingest, stats, and the demo.

    skulens serve --data data --port 50051 --model-repo model_repo [--triton start|HOST:PORT]
    skulens serve --workers [N] [--store postgresql://...] [--shard 0/2]   # replicas of one store
    skulens route --shards "h1:50051,h2:50051;h3:50051,h4:50051"           # one front end over shards
    skulens search --image shoe.jpg --top-k 5 [--filter "category=sneakers"] [--sheet out.png]
    skulens search --image shelf.jpg --scene --sheet regions.png   # every product in the picture
    skulens upsert --id sku-1 --image shoe.jpg --title "red sneaker" --category sneakers --attr color=red
    skulens ingest --fashion-mnist            # or: --folder imgs/ --meta products.jsonl
    skulens stats
    skulens loadgen -d @req.json -c 16 -n 10000 -o report.json
    skulens demo                              # the README's main job
"""

from __future__ import annotations

import argparse
import logging
import os
import sys

from ..limits import MODES

DEFAULT_TARGET = "127.0.0.1:50051"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="skulens", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--target", default=os.environ.get("SKULENS_TARGET", DEFAULT_TARGET))
    ap.add_argument("--timeout", type=float, default=30.0)
    ap.add_argument("--api-key", default=os.environ.get("SKULENS_API_KEY"),
                    help="the server's API key (default: $SKULENS_API_KEY)")
    ap.add_argument("--tls-ca", help="PEM CA bundle: talk TLS to a server whose certificate it signed")
    ap.add_argument("--tls-cert", help="PEM client certificate (mutual TLS), with --tls-key")
    ap.add_argument("--tls-key")
    sub = ap.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("serve", help="run the gRPC server")
    s.add_argument("--config")
    s.add_argument("--data")
    s.add_argument("--port", type=int)
    s.add_argument("--host")
    s.add_argument("--dim", type=int)
    s.add_argument("--model-repo", dest="model_repo")
    s.add_argument("--triton", help="run the encoders on Triton: host:port of its gRPC, or 'start' to start "
                                    "one on --model-repo (needs `make triton`); default: ONNX Runtime in process")
    s.add_argument("--keys", help="API key file (default: keys.json in --data); auth is on when it holds a key")
    s.add_argument("--server", choices=["sync", "aio"],
                   help="grpcio's thread-pool server (default) or grpc.aio (see docs/service.md)")
    s.add_argument("--cpus", help="pin the server to these CPUs, e.g. 1 or 0-3 (see docs/service.md)")
    s.add_argument("--metrics-port", type=int, help="serve Prometheus /metrics on this port (default: off)")
    s.add_argument("--tls-cert", dest="server_tls_cert", help="PEM certificate chain: serve TLS")
    s.add_argument("--tls-key", dest="server_tls_key", help="PEM private key of --tls-cert")
    s.add_argument("--tls-client-ca", help="PEM CA bundle: require client certificates it signed (mTLS)")
    s.add_argument("--store", help="the shared store of record: postgresql://... or a SQLite file other "
                   "processes serve too (default: catalog.db in --data, this process's alone)")
    s.add_argument("--shard", help="i/n: hold only partition i of n of the products (needs --store)")
    s.add_argument("--workers", type=int, nargs="?", const=0,
                   help="run N server processes on the port as replicas of one store (no N: one per core)")
    s.add_argument("--max-lag-s", type=float, dest="max_lag_s",
                   help="health NOT_SERVING while this replica trails the store longer than this")
    s = sub.add_parser("route", help="a stateless front end: fan Search out to shards, merge, forward writes")
    s.add_argument("--shards", required=True,
                   help="replicas of each shard: addresses comma-separated, shards separated by ';'")
    s.add_argument("--host", default="127.0.0.1")
    s.add_argument("--port", type=int, default=50050)
    s.add_argument("--threads", type=int, default=32)
    s.add_argument("--tls-cert", dest="server_tls_cert", help="PEM certificate chain: serve TLS")
    s.add_argument("--tls-key", dest="server_tls_key")
    s.add_argument("--backend-tls-ca", help="PEM CA bundle: talk TLS to the shards' replicas")
    s = sub.add_parser("keys", help="manage API keys: add --role read|write|admin, list, revoke ID")
    s.add_argument("action", choices=["add", "list", "revoke"])
    s.add_argument("id", nargs="?", help="revoke: the key id")
    s.add_argument("--role", default="read")
    s.add_argument("--note", default="")
    s.add_argument("--data", default="data", help="the catalogue folder whose keys.json to manage")
    s.add_argument("--keys", help="the key file (default: DATA/keys.json)")
    s = sub.add_parser("audit", help="check the audit trail's hash chain: audit verify")
    s.add_argument("action", choices=["verify"])
    s.add_argument("--data", default="data", help="the catalogue folder whose audit.jsonl to check")
    s.add_argument("--file", help="the audit file (default: DATA/audit.jsonl)")
    s = sub.add_parser("search", help="query a running server")
    s.add_argument("--image")
    s.add_argument("--text")
    s.add_argument("--product-id")
    s.add_argument("--vector", help="comma-separated floats")
    s.add_argument("--top-k", type=int, default=5)
    s.add_argument("--filter")
    s.add_argument("--mode", default="auto", choices=list(MODES))
    s.add_argument("--scene", action="store_true", help="--image is a scene: find every product in it (SearchScene)")
    s.add_argument("--sheet", help="write the query beside its hits' thumbnails to this PNG")
    s.add_argument("--data", help=argparse.SUPPRESS)  # was the catalogue folder for --sheet; the API serves thumbnails now
    s = sub.add_parser("upsert", help="insert or replace one product")
    s.add_argument("--id", required=True)
    s.add_argument("--image")
    s.add_argument("--vector", help="comma-separated floats")
    s.add_argument("--sku")
    s.add_argument("--title")
    s.add_argument("--category")
    s.add_argument("--attr", action="append", help="key=value (repeatable)")
    s.add_argument("--also", action="append", metavar="NAME=PATH",
                   help="another reference image of the product (its back, its box); repeatable")
    s = sub.add_parser("images", help="add or remove reference images of one product, leaving its others")
    s.add_argument("action", choices=["add", "remove"])
    s.add_argument("--id", required=True)
    s.add_argument("items", nargs="+", metavar="NAME=PATH | NAME", help="add: NAME=PATH ...; remove: NAME ...")
    s = sub.add_parser("ingest", help="upsert a folder of images + CSV/JSONL, or Fashion-MNIST")
    s.add_argument("--fashion-mnist", action="store_true")
    s.add_argument("--folder")
    s.add_argument("--meta", help="CSV or JSONL: id, sku, title, category, attributes, image (several: "
                                  "'a.jpg;a-back.jpg' in CSV, a list in JSONL; the first is the main one)")
    s.add_argument("--limit", type=int)
    s.add_argument("--no-resume", action="store_true")
    sub.add_parser("stats", help="catalogue and server statistics")
    s = sub.add_parser("loadgen", help="ghz-style load generator with a ghz-compatible JSON report")
    s.add_argument("--call", default="Search", help="Search, GetProduct, Stats, Embed, Upsert or Delete")
    s.add_argument("-d", "--data", required=True, help="the request as JSON, or @file")
    s.add_argument("-c", "--concurrency", type=int, default=1)
    s.add_argument("-n", "--total", type=int, default=None)
    s.add_argument("-z", "--duration", help="e.g. 30s, 2m (with -n: whichever ends first)")
    s.add_argument("--rps", type=float, help="constant request rate")
    s.add_argument("--connections", type=int, default=1)
    s.add_argument("-m", "--metadata", help="gRPC metadata as a JSON object")
    s.add_argument("-o", "--output", help="write the JSON report here")
    s = sub.add_parser("demo", help="the main job: Fashion-MNIST catalogue, server, sample queries")
    s.add_argument("--model-repo", default="model_repo")
    s.add_argument("--data")
    s.add_argument("--limit", type=int, help="ingest only this many articles (default: all 70,000)")
    s.add_argument("--queries", type=int, default=3)
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--sheet", help="draw the shelf-scene query, its regions and their best hits to this PNG")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    if args.cmd == "loadgen" and args.total is None and args.duration is None:
        args.total = 200
    import grpc
    from ..errors import InvalidArgument, Unavailable
    from . import demo, query, serve
    cmd = {"serve": serve.cmd_serve, "route": serve.cmd_route, "search": query.cmd_search, "ingest": query.cmd_ingest,
           "stats": query.cmd_stats, "demo": demo.cmd_demo, "loadgen": query.cmd_loadgen,
           "upsert": query.cmd_upsert, "images": query.cmd_images, "keys": serve.cmd_keys, "audit": serve.cmd_audit}[args.cmd]
    try:
        return cmd(args)
    except grpc.RpcError as e:  # the server's answer, as one line: its code and what was wrong
        print(f"skulens {args.cmd}: {e.code().name}: {e.details()}", file=sys.stderr)
        return 1
    except InvalidArgument as e:  # a bad setting (flag, config file, SKULENS_* variable): one line
        print(f"skulens {args.cmd}: {e}", file=sys.stderr)
        return 2
    except Unavailable as e:  # what it needs is away (the --store database, a catalogue in use): one line
        print(f"skulens {args.cmd}: {' '.join(str(e).split())}", file=sys.stderr)
        return 2
    except OSError as e:  # a file named on the command line (--image, --meta, ...)
        print(f"skulens {args.cmd}: {e.strerror or e}: {e.filename or ''}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
