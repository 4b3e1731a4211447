"""Shared fixtures for the index tests."""

import os
import sys

import pytest

# Synthetic vectors (bench/synthetic.py) are the benchmarks' and the tests' data; not shipped.
sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "bench"))
sys.path.insert(0, os.path.dirname(__file__))

from skulens.index import simd_paths
from synthetic import clustered, exact_topk as exact_reference, recall  # noqa: F401

SIMD = simd_paths()


@pytest.fixture(params=SIMD)
def simd(request):
    """Every SIMD path this CPU can run (scalar, avx2, avx512 here)."""
    return request.param


@pytest.fixture(scope="session")
def postgres():
    """A PostgreSQL server for the session (tests/postgres.py). Where the package is missing the
    tests that need it skip, except in CI (CI=true), which installs it and must run them."""
    from postgres import Postgres
    try:
        pg = Postgres()
    except FileNotFoundError as e:
        if os.environ.get("CI"):
            raise
        pytest.skip(str(e))
    yield pg
    pg.stop()


@pytest.fixture
def pg_url(postgres):
    """The URL of a fresh, empty database on the session's PostgreSQL."""
    return postgres.database()


@pytest.fixture(scope="session")
def shipped_repo(tmp_path_factory):
    """The shipped encoders (training/shipped: main + text-minilm) exported to ONNX once per session,
    as `make models` does; the tests of what users see (text words, scenes) search with them."""
    pytest.importorskip("torch", reason="exporting the shipped encoders needs torch (pip install torch==2.13.0)")
    from skulens_train.export import export
    root = os.path.join(os.path.dirname(__file__), "..", "training", "shipped")
    repo = str(tmp_path_factory.mktemp("shipped_repo"))
    export(os.path.join(root, "robust"), repo, text_run=os.path.join(root, "text-minilm"))
    return repo


def serve_articles(repo: str, data: str, n: int, extra=()):
    """A real server with the encoders of `repo`, the first n Fashion-MNIST test articles upserted as
    PNG (ids t0..t{n-1}, title = class name, category) plus `extra` products. Stop it when done."""
    from skulens import encode
    from skulens.client import Client
    from skulens.data import datasets
    from skulens.data.sources import png
    from skulens.server import Config, Server
    encs = encode.load(repo)
    s = Server(Config(data=data, dim=encs["image"].dim, port=0), encoders=encs)
    images, labels = datasets.load("test")
    with Client(s.target, timeout=60) as c:
        for a in range(0, n, 200):
            c.upsert([dict(id=f"t{i}", title=datasets.CLASSES[labels[i]], category=datasets.CATEGORY[labels[i]],
                           image=png(images[i])) for i in range(a, min(a + 200, n))])
        if extra:
            c.upsert(list(extra))
    return s
