"""Bulk upsert through the API, in batches, resumable: products already stored are skipped."""

from __future__ import annotations

import grpc


class _NoBar:
    def update(self, n):
        pass

    def close(self):
        pass


def _bar(total: int | None):
    try:
        from tqdm import tqdm
    except ImportError:  # the client needs only grpcio and protobuf
        return _NoBar()
    return tqdm(total=total, desc="ingesting", unit="product", smoothing=0.05)


def ingest(client, products, total: int | None, batch: int = 64, resume: bool = True) -> int:
    """Upsert dicts (id, sku, title, category, attributes, image or vector) in batches with a
    progress bar; with resume, products already there are skipped. Returns how many were sent."""
    sent = 0
    buf = []
    bar = _bar(total)

    def flush():
        nonlocal sent, buf
        skipped = 0
        if resume:
            keep = []
            for p in buf:
                try:
                    client.get(p["id"])
                except grpc.RpcError as e:
                    if e.code() != grpc.StatusCode.NOT_FOUND:
                        raise
                    keep.append(p)
            skipped = len(buf) - len(keep)
            buf = keep
        if buf:
            client.upsert(buf)
        sent += len(buf)
        bar.update(len(buf) + skipped)
        buf = []

    for p in products:
        buf.append(p)
        if len(buf) >= batch:
            flush()
    flush()
    bar.close()
    return sent
