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


NAMES = ("back", "side", "top", "box")  # extra images a product may have


def op(seed: int, n: int):
    """('upsert', [product dicts, some with extra images]), ('delete', [ids]), ('add_images', (id,
    {name: vector})) or ('remove_images', (id, [names])); an image edit of a product that is not
    stored is refused (NOT_FOUND) and changes nothing."""
    rng = np.random.default_rng([seed, n])
    ids = sorted(set(rng.integers(0, POOL, int(rng.integers(1, 40))).tolist()))
    r = rng.random()
    if r < 0.2:
        return "delete", [f"p{i}" for i in ids]
    if r < 0.3:
        names = rng.choice(NAMES, int(rng.integers(1, 3)), replace=False).tolist()
        return "add_images", (f"p{ids[0]}", {m: vector(seed, n, POOL + j) for j, m in enumerate(names)})
    if r < 0.35:
        return "remove_images", (f"p{ids[0]}", rng.choice(NAMES, 2, replace=False).tolist())

    def images(i):
        names = [m for m in NAMES if rng.random() < 0.15]
        return {m: vector(seed, n, POOL * (j + 2) + i) for j, m in enumerate(names)}
    return "upsert", [dict(id=f"p{i}", sku=f"S{i}", title=f"v{n}", category=f"c{i % 4}",
                           attributes={"op": str(n)}, vector=vector(seed, n, i), images=images(i)) for i in ids]


def run(c, kind: str, arg) -> None:
    from skulens.errors import NotFound
    try:
        if kind == "upsert":
            c.upsert(arg)
        elif kind == "delete":
            c.delete(arg)
        elif kind == "add_images":
            c.add_images(*arg)
        else:
            c.remove_images(*arg)
    except NotFound:  # an image edit of a product that is not stored: refused, nothing changed
        pass


def main() -> None:
    from skulens.catalog import Catalog

    path, seed, first = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    # Frequent snapshots so kills also land while one is being written.
    with Catalog.open(path, DIM, snapshot_every=150, exact_below=50) as c:
        n = first
        while True:
            kind, arg = op(seed, n)
            print(f"BEGIN {n}", flush=True)
            run(c, kind, arg)
            print(f"ACK {n}", flush=True)
            n += 1


if __name__ == "__main__":
    main()
