"""Ingests a deterministic stream of catalogue writes; the kill -9 test runs it.

Usage: python catalog_worker.py DIR SEED FIRST_OP
Prints "BEGIN n" before op n and "ACK n" once it returned (committed), flushed,
so the parent knows exactly what was acknowledged when it sends SIGKILL.
Ops are a pure function of (seed, n), so the parent can replay them.
"""

import sys

import numpy as np

DIM = 16
POOL = 400


def vector(seed: int, n: int, pid: int) -> np.ndarray:
    v = np.random.default_rng([seed, n, pid]).standard_normal(DIM)
    return (v / np.linalg.norm(v)).astype(np.float32)


def op(seed: int, n: int):
    """('upsert', [product dicts]) or ('delete', [ids])."""
    rng = np.random.default_rng([seed, n])
    ids = sorted(set(rng.integers(0, POOL, int(rng.integers(1, 40))).tolist()))
    if rng.random() < 0.2:
        return "delete", [f"p{i}" for i in ids]
    return "upsert", [dict(id=f"p{i}", sku=f"S{i}", title=f"v{n}", category=f"c{i % 4}",
                           attributes={"op": str(n)}, vector=vector(seed, n, i)) for i in ids]


def main() -> None:
    from skulens.catalog import Catalog

    path, seed, first = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    # Frequent snapshots so kills also land while one is being written.
    with Catalog.open(path, DIM, snapshot_every=150, exact_below=50) as c:
        n = first
        while True:
            kind, arg = op(seed, n)
            print(f"BEGIN {n}", flush=True)
            c.upsert(arg) if kind == "upsert" else c.delete(arg)
            print(f"ACK {n}", flush=True)
            n += 1


if __name__ == "__main__":
    main()
