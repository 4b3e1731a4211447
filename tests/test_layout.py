"""The layout's promises (docs/architecture.md): serving never imports training, no package uses
another's private names, modules stay small, each limit and enum is defined once, and the
client installs and searches on its own with grpcio and protobuf alone."""

import ast
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

ROOT = os.path.join(os.path.dirname(__file__), "..")
SERVING = os.path.join(ROOT, "server", "skulens")
TRAINING = os.path.join(ROOT, "training", "skulens_train")


def _modules(top: str):
    for d, _, files in os.walk(top):
        if os.sep + "v1" in d:  # generated from the proto
            continue
        for f in files:
            if f.endswith(".py"):
                yield os.path.join(d, f)


def _package(path: str) -> str:
    """The package a module belongs to: skulens.catalog, skulens (the flat gRPC face), skulens_train."""
    rel = os.path.relpath(path, os.path.join(ROOT, "server" if path.startswith(os.path.abspath(SERVING)) else
                                             "training"))
    parts = rel.split(os.sep)[:-1]
    return ".".join(parts)


def test_serving_imports_nothing_from_training():
    code = textwrap.dedent("""
        import importlib.abc, sys
        class Block(importlib.abc.MetaPathFinder):
            def find_spec(self, name, path, target=None):
                if name == "skulens_train" or name.startswith("skulens_train."):
                    raise ImportError("serving imported " + name)
        sys.meta_path.insert(0, Block())
        import skulens.cli, skulens.cli.demo, skulens.cli.serve, skulens.cli.query, skulens.service, skulens.server
        import skulens.catalog, skulens.index, skulens.encode, skulens.encode.triton, skulens.client
        import skulens.data.views, skulens.data.sources, skulens.data.datasets
        print("ok")
    """)
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0 and r.stdout.strip() == "ok", r.stderr


def test_no_private_name_is_used_across_packages():
    found = []
    for top in (SERVING, TRAINING):
        for path in _modules(os.path.abspath(top)):
            here = _package(path)
            for node in ast.walk(ast.parse(open(path).read())):
                if not isinstance(node, ast.ImportFrom):
                    continue
                mod = node.module or ""
                if node.level:  # relative: resolve against this module's package
                    base = here.split(".")[: len(here.split(".")) - (node.level - 1)]
                    mod = ".".join(base + ([mod] if mod else []))
                target = mod if mod.startswith(("skulens", "skulens_train")) else None
                if target is None:
                    continue
                for alias in node.names:
                    owner = target
                    if alias.name.startswith("_") and not alias.name.startswith("__") and owner != here \
                            and not owner.startswith(here + "."):
                        found.append(f"{os.path.relpath(path, ROOT)}: from {owner} import {alias.name}")
    assert not found, found


def test_no_serving_module_is_over_400_lines():
    big = [(os.path.relpath(p, ROOT), n) for p in _modules(SERVING)
           if (n := sum(1 for _ in open(p))) > 400]
    assert not big, big


def test_each_limit_and_mode_is_defined_once():
    from skulens import limits
    from skulens.client import MODES as client_modes
    from skulens.service import MODES as service_modes
    from skulens.v1 import skulens_pb2 as pb
    # The proto's enum, the service's mapping, the client's and the catalogue's list agree.
    assert tuple(client_modes) == limits.MODES == tuple(service_modes[v] for _, v in pb.Mode.items())
    # The proto documents the top_k limit the server enforces.
    proto = open(os.path.join(ROOT, "proto", "skulens", "v1", "skulens.proto")).read()
    assert f"1..{limits.MAX_TOP_K}" in proto
    # Nobody redefines a limit: every MAX_* constant lives in limits.py alone.
    for path in _modules(SERVING):
        if path.endswith("limits.py"):
            continue
        for node in ast.walk(ast.parse(open(path).read())):
            if isinstance(node, ast.Assign):
                for t in node.targets:
                    assert not (isinstance(t, ast.Name) and t.id.startswith("MAX_")), f"{path}: {t.id}"


def test_the_client_installs_alone_and_searches_a_real_server(tmp_path):
    """`pip install clients/python` in a fresh venv: grpcio + protobuf only, no numpy or onnxruntime,
    and it searches a running server over loopback."""
    from skulens.client import Client
    from skulens.server import Config, Server
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    py = str(venv / "bin" / "python")
    r = subprocess.run([py, "-m", "pip", "install", "-q", os.path.join(ROOT, "clients", "python")],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-2000:]
    x = np.random.default_rng(0).standard_normal((50, 8)).astype(np.float32)
    s = Server(Config(data=str(tmp_path / "data"), dim=8, port=0))
    try:
        with Client(s.target) as c:
            c.upsert([dict(id=f"p{i}", title=f"item {i}", vector=x[i]) for i in range(50)])
        script = textwrap.dedent(f"""
            import importlib.util, sys
            for heavy in ("numpy", "onnxruntime", "PIL", "tokenizers", "torch"):
                assert importlib.util.find_spec(heavy) is None, heavy + " is installed"
            from skulens.client import Client
            with Client("{s.target}") as c:
                hits = c.search(vector={x[7].tolist()}, top_k=3, include_metadata=True)
                print(hits[0].product_id, hits[0].title, "skulens._kernel" in sys.modules)
        """)
        r = subprocess.run([py, "-c", script], capture_output=True, text=True, cwd=str(tmp_path))
        assert r.returncode == 0, r.stderr
        assert r.stdout.split() == ["p7", "item", "7", "False"]
    finally:
        s.stop()


@pytest.mark.parametrize("bad", ["no-such-product"])
def test_thumbnails_come_through_the_api(tmp_path, bad):
    """GetProduct(include_thumbnail) returns the stored thumbnail, so the CLI's contact sheet
    never opens the server's files; a product without one answers empty."""
    import grpc
    from skulens.client import Client
    from skulens.server import Config, Server
    s = Server(Config(data=str(tmp_path / "data"), dim=4, port=0))
    try:
        s.catalog.upsert([dict(id="a", vector=np.ones(4), thumbnail=b"\xff\xd8jpeg-bytes"),
                          dict(id="b", vector=np.arange(1, 5))])
        with Client(s.target) as c:
            assert c.thumbnail("a") == b"\xff\xd8jpeg-bytes" and c.get("a").thumbnail == b""
            assert c.thumbnail("b") is None
            with pytest.raises(grpc.RpcError) as e:
                c.thumbnail(bad)
            assert e.value.code() == grpc.StatusCode.NOT_FOUND
    finally:
        s.stop()
