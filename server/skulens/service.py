"""The gRPC service: request -> decode -> encode -> search -> rank -> response.

Every RPC checks its request once, maps skulens errors to their gRPC codes in
one place (`rpc.py`), and never lets an exception take the server down. The write RPCs
are in `writes.py`.
"""

from __future__ import annotations

import json
import logging
import os
import time

import grpc
import numpy as np

from .catalog import Catalog
from .errors import DeadlineExceeded, InvalidArgument, NotFound, SkulensError, Unavailable, Unimplemented
from .fusion import Fusion
from .rpc import floats as _floats, rpc as _rpc
from .writes import Writes
from .scene import SceneTracks, search_scene
from .limits import MAX_ID_BYTES, MAX_IMAGES, MAX_SEQ_WAIT_S, MAX_TOP_K
from .security.auth import caller
from .security.images import scrub
from .v1 import skulens_pb2 as pb
from .v1 import skulens_pb2_grpc as pb_grpc

log = logging.getLogger("skulens.service")

# The proto's Mode enum, by the catalogue's names (MODE_AUTO -> "auto"; limits.MODES lists the same).
MODES = {value: name.removeprefix("MODE_").lower() for name, value in pb.Mode.items()}


def _vector(v: pb.Vector) -> np.ndarray:
    """A query's Vector from either of its wire forms; the raw bytes cost no per-float work."""
    raw = v.le_float32
    if raw:
        if v.values:
            raise InvalidArgument("set vector.values or vector.le_float32, not both")
        if len(raw) % 4:
            raise InvalidArgument(f"vector.le_float32 holds {len(raw)} bytes, not a whole number of float32s")
        return np.frombuffer(raw, "<f4")
    if not v.values:
        raise InvalidArgument("query vector is empty")
    return _floats(v.values)


def _filters(f: pb.Filter):
    if f.expression and f.all:
        raise InvalidArgument("set either filter.all or filter.expression, not both")
    if f.expression:
        return f.expression
    if f.all:
        return [[(t.key, t.value) for t in c.any] for c in f.all]
    return None


def _deadline(context) -> None:
    left = context.time_remaining()
    if left is not None and left <= 0:
        raise DeadlineExceeded("the deadline passed before the search ran")


def _wait_seq(catalog: Catalog, seq: int, context) -> None:
    """min_seq: wait until this replica holds change seq, no longer than the deadline allows."""
    if seq < 0:
        raise InvalidArgument(f"min_seq must be >= 0, got {seq}")
    if catalog.seq >= seq:
        return
    left = context.time_remaining()
    limit = MAX_SEQ_WAIT_S if left is None else min(left, MAX_SEQ_WAIT_S)
    if not catalog.wait_seq(seq, limit):
        why = f"this replica holds changes up to {catalog.seq}; change {seq} did not arrive within {limit:.2f} s"
        raise (DeadlineExceeded if limit < MAX_SEQ_WAIT_S else Unavailable)(why)


def stream_hits(fusion: Fusion, frame: int, r: pb.SearchResponse) -> pb.StreamHits:
    """One frame's answer in a SearchStream: its hits, and the evidence fused so far."""
    fused, stable, leader, confidence = fusion.add({h.product_id: h.score for h in r.hits})
    return pb.StreamHits(frame=frame, hits=r.hits,
                         fused=[pb.Hit(product_id=i, score=sc) for i, sc in fused[:len(r.hits)]], stable=stable, stable_product_id=leader if stable else "", confidence=confidence,
                         timings=r.timings)


class ProductSearch(Writes, pb_grpc.ProductSearchServicer):
    """skulens.v1.ProductSearch over one catalogue and the encoders it was given."""

    def __init__(self, catalog: Catalog | None, encoders=None):
        self.catalog = catalog
        self.encoders = encoders or {}  # "image" / "text" -> skulens.encode.ImageEncoder / TextEncoder
        self.metrics = self.drift = None  # monitoring.Metrics / monitoring.Drift, when the server has them

    # --- queries -------------------------------------------------------------------
    def _query_vector(self, q: pb.Query, timings: pb.Timings):
        kind = q.WhichOneof("kind")
        if kind is None:
            raise InvalidArgument("empty query: set one of image, text, vector or product_id")
        if kind == "vector":
            return _vector(q.vector), None, "image"
        if kind == "product_id":
            if not q.product_id or len(q.product_id.encode()) > MAX_ID_BYTES:
                raise InvalidArgument(f"product_id must be 1..{MAX_ID_BYTES} bytes")
            p = self.catalog.get(q.product_id)
            if p is None:
                raise NotFound(f"no product with id {q.product_id!r}")
            return p.vector, q.product_id, "image"
        enc = self.encoders.get(kind)
        if enc is None:
            raise Unimplemented(f"this server has no {kind} encoder loaded")
        v = enc.embed_request(getattr(q, kind), timings)
        # A text model aligned with the images searches them; another one searches titles.
        return v, None, "image" if enc.dim == self.catalog.dim else "text"

    @_rpc
    def Search(self, request: pb.SearchRequest, context) -> pb.SearchResponse:
        return self._search(request, context)

    def SearchStream(self, request_iterator, context):
        """One StreamHits per frame: the frame's hits, the hits fused over the recent
        frames, and whether the fused leader is stable (see fusion.py)."""
        fusion = Fusion()
        try:
            if self.catalog is None:
                raise Unavailable("the server is still loading its catalogue")
            for frame, req in enumerate(request_iterator):
                yield stream_hits(fusion, frame, self._search(req, context))
        except SkulensError as e:
            context.abort(getattr(grpc.StatusCode, e.grpc_code), scrub(f"frame {locals().get('frame', 0)}: {e}"))

    def _search(self, request: pb.SearchRequest, context) -> pb.SearchResponse:
        t0 = time.perf_counter_ns()
        out = pb.SearchResponse()
        timings = out.timings  # the stages write into the response itself
        top_k = request.top_k or 10
        if not 1 <= top_k <= MAX_TOP_K:
            raise InvalidArgument(f"top_k must be in 1..{MAX_TOP_K}, got {request.top_k}")
        if request.mode not in MODES:
            raise InvalidArgument(f"unknown mode {request.mode}")
        if request.ef < 0:
            raise InvalidArgument(f"ef must be >= 0, got {request.ef}")
        filters = _filters(request.filter)
        if request.min_seq:
            _wait_seq(self.catalog, request.min_seq, context)
        out.seq = self.catalog.seq
        vector, exclude, field = self._query_vector(request.query, timings)
        _deadline(context)
        t1 = time.perf_counter_ns()
        # "More like this" leaves the product itself out of its own answer.
        if not 0 <= request.images_per_hit <= MAX_IMAGES:
            raise InvalidArgument(f"images_per_hit must be in 0..{MAX_IMAGES}, got {request.images_per_hit}")
        hits = self.catalog.search(vector, top_k + (exclude is not None), filters=filters,
                                   mode=MODES[request.mode], ef=request.ef or None, field=field,
                                   images=request.images_per_hit or 1)
        if exclude is not None:
            hits = [h for h in hits if h.id != exclude][:top_k]
        timings.search_us = (time.perf_counter_ns() - t1) // 1000
        if self.drift is not None and exclude is None and field == "image":
            self.drift.observe(vector, hits[0].score if hits else None)
        add = out.hits.add  # twice as fast as building Hit messages and a list of them
        for h in hits:
            if h.images:
                add(product_id=h.id, score=h.score, image_id=h.image,
                    images=[pb.ImageScore(image_id=n, score=sc) for n, sc in h.images])
            else:
                add(product_id=h.id, score=h.score, image_id=h.image)
        if request.include_metadata and hits:
            meta = self.catalog.get_many([h.id for h in hits])
            for h in out.hits:
                p = meta.get(h.product_id)
                if p is not None:  # deleted since the search: the hit stays, bare
                    h.sku, h.title, h.category = p.sku, p.title, p.category
        timings.total_us = (time.perf_counter_ns() - t0) // 1000
        return out

    # --- scenes --------------------------------------------------------------------
    def _scene(self, request: pb.SceneRequest, context, tracks=None) -> pb.SceneResponse:
        t0 = time.perf_counter_ns()
        enc = self.encoders.get("image")
        if enc is None:
            raise Unimplemented("this server has no image encoder loaded")
        if not request.image:
            raise InvalidArgument("set image: the picture of the scene")
        filters = _filters(request.filter)
        if request.min_seq:
            _wait_seq(self.catalog, request.min_seq, context)
        out = pb.SceneResponse(seq=self.catalog.seq)
        regions, out.candidates = search_scene(enc, self.catalog, request.image, request.top_k, request.max_regions,
                                               request.min_objectness, filters, out.timings)
        meta = self.catalog.get_many(list({h.id for _, _, hits in regions for h in hits})) if request.include_metadata \
            else {}
        for box, objectness, hits in regions:
            r = out.regions.add(box=pb.Box(x0=box[0], y0=box[1], x1=box[2], y1=box[3]), objectness=objectness)
            for h in hits:
                p = meta.get(h.id)
                r.hits.add(product_id=h.id, score=h.score, image_id=h.image, **({"sku": p.sku, "title": p.title, "category": p.category}
                                                               if p is not None else {}))
            if tracks is not None:
                r.track, fused, r.stable, leader, _ = tracks.assign(np.asarray(box), {h.id: h.score for h in hits})
                r.fused.extend(pb.Hit(product_id=i, score=sc) for i, sc in fused[:len(hits)])
                r.stable_product_id = leader if r.stable else ""
        out.timings.total_us = (time.perf_counter_ns() - t0) // 1000
        return out

    @_rpc
    def SearchScene(self, request: pb.SceneRequest, context) -> pb.SceneResponse:
        return self._scene(request, context)

    def SearchSceneStream(self, request_iterator, context):
        tracks = SceneTracks()
        try:
            if self.catalog is None:
                raise Unavailable("the server is still loading its catalogue")
            for frame, req in enumerate(request_iterator):
                yield self._scene(req, context, tracks)
        except SkulensError as e:
            context.abort(getattr(grpc.StatusCode, e.grpc_code), scrub(f"frame {locals().get('frame', 0)}: {e}"))

    # --- reads ---------------------------------------------------------------------
    @_rpc
    def GetProduct(self, request: pb.GetProductRequest, context) -> pb.Product:
        p = self.catalog.get(request.id)
        if p is None:
            raise NotFound(f"no product with id {request.id!r}")
        out = pb.Product(id=p.id, sku=p.sku, title=p.title, category=p.category, attributes=p.attributes,
                         created=p.created, updated=p.updated)
        if request.include_vector:
            out.vector.extend(p.vector.tolist())
            if p.text_vector is not None:
                out.text_vector.extend(p.text_vector.tolist())
        if request.include_thumbnail:
            out.thumbnail = self.catalog.thumbnail(request.id) or b""
        for name, v in p.images.items():
            im = out.images.add(id=name)
            if request.include_vector:
                im.vector.extend(v.tolist())
            if request.include_thumbnail:
                im.thumbnail = self.catalog.thumbnail(request.id, name) or b""
        return out

    @_rpc
    def Embed(self, request: pb.EmbedRequest, context) -> pb.EmbedResponse:
        kind = request.WhichOneof("kind")
        if kind is None:
            raise InvalidArgument("set image or text")
        enc = self.encoders.get(kind)
        if enc is None:
            raise Unimplemented(f"this server has no {kind} encoder loaded")
        timings = pb.Timings()
        v = enc.embed_request(getattr(request, kind), timings)
        return pb.EmbedResponse(vector=v.tolist(), model=enc.name, timings=timings)

    @_rpc
    def Stats(self, request: pb.StatsRequest, context) -> pb.StatsResponse:
        if request.min_seq:
            _wait_seq(self.catalog, request.min_seq, context)
        st = self.catalog.stats()
        st["encoders"] = {k: e.name for k, e in self.encoders.items()}
        st["pid"] = os.getpid()  # which process answered (several serve one port with --workers)
        _, role = caller()
        if role is not None and role != "admin":  # the catalogue's internals are for admin keys
            st = {k: st[k] for k in ("products", "dim", "storage", "encoders")}
        return pb.StatsResponse(products=st["products"], dim=st["dim"], json=json.dumps(st))

