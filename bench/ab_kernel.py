"""A/B of two builds of the kernel extension: single-query search times, alternating processes.

    python bench/ab_kernel.py OLD/_kernel*.so NEW/_kernel*.so [--rounds 6]

Each round runs one process per build (in alternating order); each process builds a 100k x 128
index per storage and reports the best of 40 x 32 single-query searches on 1 thread. Prints the
best and the median over the rounds. Two builds of `_kernel` cannot share one process (Python
caches an extension by name), hence the processes.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import statistics
import subprocess
import sys
import time

from machine import cpu_model


def one(path: str) -> dict:
    import numpy as np
    spec = importlib.util.spec_from_file_location("_kernel", path)
    m = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(m)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((100_000, 128)).astype(np.float32)
    q = rng.standard_normal((32, 128)).astype(np.float32)
    out = {"simd": m.best_simd()}
    for storage in ("fp32", "fp16", "int8"):
        ix = m.ExactIndex(128, storage, 1)
        ix.add(x)
        best = 1e9
        for _ in range(40):
            t0 = time.perf_counter()
            for i in range(32):
                ix.search(q[i:i + 1], 10, None)
            best = min(best, (time.perf_counter() - t0) / 32)
        out[storage] = best * 1e6
    return out




def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("a")
    ap.add_argument("b")
    ap.add_argument("--rounds", type=int, default=6)
    ap.add_argument("--one", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.one:
        print(json.dumps(one(args.a)))
        return
    runs = {"a": [], "b": []}
    for r in range(args.rounds):
        for side in (("a", "b") if r % 2 == 0 else ("b", "a")):
            path = args.a if side == "a" else args.b
            res = subprocess.run([sys.executable, __file__, path, path, "--one"], capture_output=True, text=True,
                                 check=True)
            runs[side].append(json.loads(res.stdout))
    print(f"cpu: {cpu_model()}, simd: {runs['a'][0]['simd']}")
    print("| storage | a: best / median (us) | b: best / median (us) | b/a (best, median) |\n|---|---|---|---|")
    for s in ("fp32", "fp16", "int8"):
        a, b = [r[s] for r in runs["a"]], [r[s] for r in runs["b"]]
        print(f"| {s} | {min(a):.0f} / {statistics.median(a):.0f} | {min(b):.0f} / {statistics.median(b):.0f} | "
              f"{min(b) / min(a):.2f}, {statistics.median(b) / statistics.median(a):.2f} |")


if __name__ == "__main__":
    main()
