"""A small client for skulens.v1.ProductSearch, sync (`Client`) and asyncio (`AsyncClient`).

    from skulens.client import Client
    with Client("127.0.0.1:50051") as c:
        for hit in c.search(vector=v, top_k=5, filters="category=shoes"):
            print(hit.product_id, hit.score)

Errors arrive as grpc.RpcError with the server's status code and message.
"""

from __future__ import annotations

import sys
from array import array
from typing import Iterable, Sequence

import grpc

from ..v1 import skulens_pb2 as pb
from ..v1 import skulens_pb2_grpc as pb_grpc

# The proto's Mode enum is the one list of search modes: MODE_AUTO -> "auto", ...
MODES = {name.removeprefix("MODE_").lower(): value for name, value in pb.Mode.items()}


def le_float32(vector) -> bytes:
    """A vector as the raw little-endian float32 bytes of `Vector.le_float32` (no numpy needed:
    the server reads these without per-number work, and building them is one C loop here)."""
    if hasattr(vector, "astype"):  # a numpy array
        return vector.astype("<f4").tobytes()
    a = array("f", vector)
    if sys.byteorder == "big":
        a.byteswap()
    return a.tobytes()


def _filter(filters) -> pb.Filter | None:
    if filters is None:
        return None
    if isinstance(filters, str):
        return pb.Filter(expression=filters)
    if isinstance(filters, dict):
        filters = [[(k, v)] if isinstance(v, str) else [(k, x) for x in v] for k, v in filters.items()]
    return pb.Filter(all=[pb.Clause(any=[pb.Term(key=k, value=v) for k, v in c]) for c in filters])


def search_request(*, image: bytes | None = None, text: str | None = None, vector: Sequence[float] | None = None,
                   product_id: str | None = None, top_k: int = 10, filters=None, mode: str = "auto", ef: int = 0,
                   include_metadata: bool = False, min_seq: int = 0, images_per_hit: int = 0) -> pb.SearchRequest:
    given = [k for k, v in dict(image=image, text=text, vector=vector, product_id=product_id).items() if v is not None]
    if len(given) != 1:
        raise ValueError(f"give exactly one of image, text, vector, product_id (got {given or 'none'})")
    q = pb.Query()
    if image is not None:
        q.image = image
    elif text is not None:
        q.text = text
    elif vector is not None:
        q.vector.le_float32 = le_float32(vector)
    else:
        q.product_id = product_id
    return pb.SearchRequest(query=q, top_k=top_k, filter=_filter(filters), mode=MODES[mode], ef=ef,
                            include_metadata=include_metadata, min_seq=min_seq, images_per_hit=images_per_hit)


def scene_request(image: bytes, top_k: int = 5, max_regions: int = 0, min_objectness: float = 0.0, filters=None,
                  include_metadata: bool = False, min_seq: int = 0) -> pb.SceneRequest:
    return pb.SceneRequest(image=image, top_k=top_k, max_regions=max_regions, min_objectness=min_objectness,
                           filter=_filter(filters), include_metadata=include_metadata, min_seq=min_seq)


def image_messages(images) -> list[pb.ProductImage]:
    """{image id: encoded image bytes or a vector} as ProductImages."""
    out = []
    for name, v in (images or {}).items():
        if isinstance(v, (bytes, bytearray)):
            out.append(pb.ProductImage(id=name, image=bytes(v)))
        else:
            out.append(pb.ProductImage(id=name, vector=[float(x) for x in v]))
    return out


def product_message(p) -> pb.Product:
    """A dict or an object with the same fields (skulens.catalog.Product) as the wire message;
    "images" maps extra image ids to encoded image bytes or vectors."""
    d = p if isinstance(p, dict) else {k: getattr(p, k) for k in ("id", "sku", "title", "category", "attributes",
                                                                   "vector", "text_vector", "images")}
    m = pb.Product(id=d["id"], sku=d.get("sku") or "", title=d.get("title") or "",
                   category=d.get("category") or "", attributes=d.get("attributes") or {})
    if d.get("vector") is not None:
        m.vector.extend([float(x) for x in d["vector"]])
    if d.get("text_vector") is not None:
        m.text_vector.extend([float(x) for x in d["text_vector"]])
    if d.get("image") is not None:
        m.image = d["image"]
    m.images.extend(image_messages(d.get("images")))
    return m


def _read(path: str | None) -> bytes | None:
    if path is None:
        return None
    with open(path, "rb") as f:
        return f.read()


def channel_args(api_key: str | None, metadata, tls_ca: str | None, tls_cert: str | None, tls_key: str | None):
    """(credentials or None, metadata): an API key travels as 'authorization: Bearer <key>';
    tls_ca (PEM) turns TLS on, tls_cert + tls_key add a client certificate (mTLS)."""
    md = list(metadata.items() if isinstance(metadata, dict) else metadata or ())
    if api_key:
        md.append(("authorization", f"Bearer {api_key}"))
    creds = None
    if tls_ca or tls_cert:
        creds = grpc.ssl_channel_credentials(root_certificates=_read(tls_ca), private_key=_read(tls_key),
                                             certificate_chain=_read(tls_cert))
    return creds, md or None


class Client:
    def __init__(self, target: str, timeout: float | None = 10.0, metadata=None, options=(), *,
                 api_key: str | None = None, tls_ca: str | None = None, tls_cert: str | None = None,
                 tls_key: str | None = None):
        creds, self.metadata = channel_args(api_key, metadata, tls_ca, tls_cert, tls_key)
        self.channel = (grpc.secure_channel(target, creds, options=list(options)) if creds is not None
                        else grpc.insecure_channel(target, options=list(options)))
        self.stub = pb_grpc.ProductSearchStub(self.channel)
        self.timeout = timeout

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        self.channel.close()

    def _kw(self):
        return {"timeout": self.timeout, "metadata": self.metadata}

    def search(self, **kw) -> list:
        return list(self.stub.Search(search_request(**kw), **self._kw()).hits)

    def search_full(self, **kw) -> pb.SearchResponse:
        """The whole response, timings included."""
        return self.stub.Search(search_request(**kw), **self._kw())

    def search_stream(self, frames: Iterable[dict]):
        """Yield a StreamHits per frame; each frame is search()'s keyword arguments."""
        return self.stub.SearchStream((search_request(**f) for f in frames), metadata=self.metadata)

    def search_scene(self, image: bytes, top_k: int = 5, max_regions: int = 0, min_objectness: float = 0.0,
                     filters=None, include_metadata: bool = False, min_seq: int = 0) -> pb.SceneResponse:
        """Every product in one picture: regions (box, objectness, hits), best first."""
        return self.stub.SearchScene(scene_request(image, top_k, max_regions, min_objectness, filters,
                                                   include_metadata, min_seq), **self._kw())

    def search_scene_stream(self, frames: Iterable[bytes], **kw):
        """Yield a SceneResponse per frame, its regions tracked across frames."""
        return self.stub.SearchSceneStream((scene_request(f, **kw) for f in frames), metadata=self.metadata)

    def upsert(self, products: Iterable) -> pb.UpsertResponse:
        return self.stub.Upsert(pb.UpsertRequest(products=[product_message(p) for p in products]), **self._kw())

    def upsert_stream(self, batches: Iterable[Iterable]) -> pb.UpsertResponse:
        reqs = (pb.UpsertRequest(products=[product_message(p) for p in b]) for b in batches)
        return self.stub.UpsertStream(reqs, **self._kw())

    def delete(self, ids: Iterable[str]) -> int:
        return self.stub.Delete(pb.DeleteRequest(ids=list(ids)), **self._kw()).deleted

    def add_images(self, product_id: str, images: dict) -> pb.ImagesResponse:
        """Add (or replace) a product's extra images: {image id: encoded image bytes or a vector}."""
        return self.stub.AddImages(pb.AddImagesRequest(product_id=product_id, images=image_messages(images)),
                                   **self._kw())

    def remove_images(self, product_id: str, image_ids: Iterable[str]) -> pb.ImagesResponse:
        return self.stub.RemoveImages(pb.RemoveImagesRequest(product_id=product_id, image_ids=list(image_ids)),
                                      **self._kw())

    def get(self, product_id: str, include_vector: bool = False, include_thumbnail: bool = False) -> pb.Product:
        return self.stub.GetProduct(pb.GetProductRequest(id=product_id, include_vector=include_vector,
                                                         include_thumbnail=include_thumbnail), **self._kw())

    def thumbnail(self, product_id: str, image_id: str = "") -> bytes | None:
        """The stored thumbnail (JPEG) of the product's image image_id ("": its main one), or None."""
        p = self.get(product_id, include_thumbnail=True)
        if not image_id:
            return p.thumbnail or None
        return next((im.thumbnail for im in p.images if im.id == image_id), b"") or None

    def embed(self, *, image: bytes | None = None, text: str | None = None) -> list[float]:
        req = pb.EmbedRequest(image=image) if image is not None else pb.EmbedRequest(text=text)
        return list(self.stub.Embed(req, **self._kw()).vector)

    def stats(self, min_seq: int = 0) -> dict:
        import json
        return json.loads(self.stub.Stats(pb.StatsRequest(min_seq=min_seq), **self._kw()).json)


class AsyncClient:
    """The same calls on grpc.aio, for asyncio programs."""

    def __init__(self, target: str, timeout: float | None = 10.0, metadata=None, options=(), *,
                 api_key: str | None = None, tls_ca: str | None = None, tls_cert: str | None = None,
                 tls_key: str | None = None):
        creds, self.metadata = channel_args(api_key, metadata, tls_ca, tls_cert, tls_key)
        self.channel = (grpc.aio.secure_channel(target, creds, options=list(options)) if creds is not None
                        else grpc.aio.insecure_channel(target, options=list(options)))
        self.stub = pb_grpc.ProductSearchStub(self.channel)
        self.timeout = timeout

    async def __aenter__(self) -> "AsyncClient":
        return self

    async def __aexit__(self, *exc) -> None:
        await self.close()

    async def close(self) -> None:
        await self.channel.close()

    async def search(self, **kw) -> list:
        r = await self.stub.Search(search_request(**kw), timeout=self.timeout, metadata=self.metadata)
        return list(r.hits)

    async def upsert(self, products: Iterable) -> pb.UpsertResponse:
        return await self.stub.Upsert(pb.UpsertRequest(products=[product_message(p) for p in products]),
                                      timeout=self.timeout, metadata=self.metadata)

    async def delete(self, ids: Iterable[str]) -> int:
        r = await self.stub.Delete(pb.DeleteRequest(ids=list(ids)), timeout=self.timeout, metadata=self.metadata)
        return r.deleted

    async def get(self, product_id: str, include_vector: bool = False, include_thumbnail: bool = False) -> pb.Product:
        return await self.stub.GetProduct(pb.GetProductRequest(id=product_id, include_vector=include_vector,
                                                               include_thumbnail=include_thumbnail),
                                          timeout=self.timeout, metadata=self.metadata)

    async def stats(self, min_seq: int = 0) -> dict:
        import json
        r = await self.stub.Stats(pb.StatsRequest(min_seq=min_seq), timeout=self.timeout, metadata=self.metadata)
        return json.loads(r.json)
