"""Snapshot files of the in-memory indexes: a cache of the database, never the truth.

A snapshot is a folder `snapshots/<seq>/` holding the HNSW graph, its per-slot
state, `slot_seq` (the change seq of the version each slot holds) and `slot_ids`
(the product id in each slot, [id, name] for a product's extra image: slots are the
replica's own, not the store's), plus a
manifest with sizes and CRC32s written last. It is built in a temporary folder,
each file fsynced, then renamed into place and the parent fsynced, so a crash
leaves either the whole snapshot or a temporary folder that start-up deletes.
The exact kernel's rows are stored as encoded (`exact.bin`), so a restart
restores them bit for bit without reading vectors from SQLite.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import zlib
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from ..index import ExactIndex, HnswIndex

log = logging.getLogger("skulens.snapshot")

VERSION = 3          # 3: extra images' slots in slot_ids; 2 (one image per product) still loads
READS = (2, 3)
GRAPH, STATE, EXACT, SLOT_SEQ, SLOT_IDS, MANIFEST = ("hnsw.bin", "hnsw_state.npy", "exact.bin", "slot_seq.npy",
                                                    "slot_ids.json", "manifest.json")


def _crc(path: str) -> int:
    crc = 0
    with open(path, "rb") as f:
        while chunk := f.read(1 << 22):
            crc = zlib.crc32(chunk, crc)
    return crc


def _fsync(path: str) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write(root: str, seq: int, graph: HnswIndex, exact: ExactIndex, slot_seq: np.ndarray, slot_keys: list,
          params: dict, keep: int = 2, replace: bool = False) -> str:
    """Write snapshot `seq` under root; keep the newest `keep`; returns its folder.

    replace: a snapshot of the same seq exists but the graph has grown since
    (the indexer caught up); the new one takes its place."""
    os.makedirs(root, exist_ok=True)
    final = os.path.join(root, f"{seq:020d}")
    if os.path.isdir(final) and not replace:
        return final
    tmp = os.path.join(root, f".tmp-{seq:020d}-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    os.makedirs(tmp)
    graph.save(os.path.join(tmp, GRAPH), os.path.join(tmp, STATE))
    exact.save(os.path.join(tmp, EXACT))
    np.save(os.path.join(tmp, SLOT_SEQ), slot_seq)
    with open(os.path.join(tmp, SLOT_IDS), "w") as f:
        json.dump(slot_keys, f, ensure_ascii=False, separators=(",", ":"))
    files = {}
    for name in (GRAPH, STATE, EXACT, SLOT_SEQ, SLOT_IDS):
        p = os.path.join(tmp, name)
        _fsync(p)
        files[name] = {"bytes": os.path.getsize(p), "crc32": _crc(p)}
    manifest = {"version": VERSION, "seq": seq, "params": params, "files": files}
    with open(os.path.join(tmp, MANIFEST), "w") as f:
        json.dump(manifest, f, indent=1)
        f.flush()
        os.fsync(f.fileno())
    _fsync(tmp)
    if os.path.isdir(final):
        # Same seq, fuller graph. A crash between these two renames leaves only
        # the older snapshots (or none): start-up then replays or rebuilds.
        old = os.path.join(root, f".tmp-old-{seq:020d}-{os.getpid()}")
        os.rename(final, old)
        os.rename(tmp, final)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.rename(tmp, final)
    _fsync(root)
    for old in list_snapshots(root)[keep:]:
        shutil.rmtree(os.path.join(root, f"{old:020d}"), ignore_errors=True)
    return final


def graph_path(root: str, seq: int) -> str:
    """The HNSW graph file of snapshot seq (hnswlib's own format: pip hnswlib loads it)."""
    return os.path.join(root, f"{seq:020d}", GRAPH)


def list_snapshots(root: str) -> list[int]:
    """Seqs of complete-looking snapshots, newest first; removes leftover temporaries."""
    if not os.path.isdir(root):
        return []
    seqs = []
    for name in os.listdir(root):
        if name.startswith(".tmp-"):
            shutil.rmtree(os.path.join(root, name), ignore_errors=True)
        elif name.isdigit():
            seqs.append(int(name))
    return sorted(seqs, reverse=True)


def load(root: str, seq: int, params: dict, threads: int | None, exact: ExactIndex):
    """(graph, slot_seq, slot_keys) of snapshot seq, with its rows loaded into `exact`: per slot
    (product id, image name) with "" for a main image, or None; raises ValueError when it is
    damaged or was built with other parameters."""
    folder = os.path.join(root, f"{seq:020d}")
    try:
        with open(os.path.join(folder, MANIFEST)) as f:
            m = json.load(f)
    except (OSError, ValueError) as e:
        raise ValueError(f"manifest unreadable: {e}") from None
    if m.get("version") not in READS or m.get("seq") != seq:
        raise ValueError(f"manifest version/seq mismatch ({m.get('version')}, {m.get('seq')})")
    if {k: m["params"].get(k) for k in params} != params:
        raise ValueError(f"built with {m['params']}, now {params}")
    for name, want in m["files"].items():
        p = os.path.join(folder, name)
        if not os.path.exists(p) or os.path.getsize(p) != want["bytes"]:
            raise ValueError(f"{name} is missing or of the wrong size")
    # Every file is checked before anything parses it (hnswlib trusts its input);
    # zlib and file reads release the GIL, so the files are summed in parallel.
    with ThreadPoolExecutor(len(m["files"])) as pool:
        sums = dict(zip(m["files"], pool.map(lambda n: _crc(os.path.join(folder, n)), m["files"])))
    for name, want in m["files"].items():
        if sums[name] != want["crc32"]:
            raise ValueError(f"{name} does not match its checksum")
    with ThreadPoolExecutor(1) as pool:  # the kernel loads (GIL released) while hnswlib does
        exact_done = pool.submit(exact.load, os.path.join(folder, EXACT))
        graph = HnswIndex.load(os.path.join(folder, GRAPH), os.path.join(folder, STATE), dim=params["dim"],
                               M=params["M"], ef_construction=params["ef_construction"], threads=threads)
        exact_done.result()
    slot_seq = np.load(os.path.join(folder, SLOT_SEQ))
    if slot_seq.dtype != np.int64 or slot_seq.ndim != 1:
        raise ValueError("slot_seq has the wrong type")
    with open(os.path.join(folder, SLOT_IDS), encoding="utf-8") as f:
        slot_ids = json.load(f)
    if not isinstance(slot_ids, list) or len(slot_ids) != len(slot_seq):
        raise ValueError("slot_ids does not match slot_seq")
    try:
        keys = [k if k is None else (k, "") if isinstance(k, str) else (str(k[0]), str(k[1])) for k in slot_ids]
    except (TypeError, IndexError):
        raise ValueError("slot_ids holds something other than ids") from None
    return graph, slot_seq, keys
