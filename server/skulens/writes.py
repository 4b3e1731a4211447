"""The write RPCs: Upsert, UpsertStream, Delete, AddImages, RemoveImages.

request -> decode + encode (every image of a request in encoder batches) -> one durable
catalogue transaction per request (or per streamed batch) -> response. A product's images are
its main one (Product.image / vector) and up to 15 named ones (Product.images).
"""

from __future__ import annotations

import numpy as np

from .catalog import Product
from .errors import InvalidArgument, SkulensError, Unimplemented
from .limits import MAX_IMAGES
from .rpc import floats, rpc
from .v1 import skulens_pb2 as pb

EMBED_BATCH = 64   # images decoded at a time: a request's memory stays bounded by it, not by its size


class Writes:
    """The write half of skulens.v1.ProductSearch (service.ProductSearch inherits it)."""

    def _vector_of(self, what: str, vector, image: bytes, timings, embedded):
        """(unit-to-be vector, thumbnail) of one image: its given vector, else its embedding."""
        v = floats(vector) if len(vector) else embedded
        thumb = None
        if image:
            enc = self.encoders.get("image")
            if v is None:
                if enc is None:
                    raise Unimplemented(f"{what} has an image but this server has no image encoder")
                v = enc.embed_request(image, timings)
            thumb = enc.thumbnail(image) if enc is not None else None
        if v is None:
            raise InvalidArgument(f"{what} needs a vector or an image")
        return v, thumb

    def _images(self, pid: str, images, timings, pre: dict, index: int) -> tuple[dict, dict]:
        """A request's ProductImages as ({name: vector}, {name: thumbnail})."""
        vecs, thumbs = {}, {}
        for im in images:
            what = f"product {pid!r} image {im.id!r}"
            if not im.id:
                raise InvalidArgument(f"product {pid!r}: every image needs an id (its name within the product)")
            if im.id in vecs:
                raise InvalidArgument(f"product {pid!r}: image id {im.id!r} appears twice")
            vecs[im.id], t = self._vector_of(what, im.vector, im.image, timings, pre.get((index, im.id)))
            if t is not None:
                thumbs[im.id] = t
        return vecs, thumbs

    def _product(self, p: pb.Product, timings: pb.Timings, pre: dict, index: int) -> Product:
        vector, thumb = self._vector_of(f"product {p.id!r}", p.vector, p.image, timings, pre.get((index, "")))
        images, thumbs = self._images(p.id, p.images, timings, pre, index)
        text_vector = floats(p.text_vector) if len(p.text_vector) else None
        return Product(id=p.id, sku=p.sku, title=p.title, category=p.category, attributes=dict(p.attributes),
                       vector=vector, text_vector=text_vector, thumbnail=thumb, images=images,
                       image_thumbnails=thumbs)

    def _embed_batch(self, products) -> dict[tuple[int, str], np.ndarray]:
        """Vectors for every image that came without a vector, {(product index, image name "" for
        the main one): vector}, in encoder batches (ONNX Runtime is several times faster per image
        in batches). Counts are checked first: nothing is encoded for a request that is refused."""
        todo = []
        for i, p in enumerate(products):
            if len(p.images) + 1 > MAX_IMAGES:
                raise InvalidArgument(f"product {p.id!r}: {len(p.images) + 1} images; a product holds at most "
                                      f"{MAX_IMAGES}")
            if p.image and not len(p.vector):
                todo.append((i, "", p.image))
            todo += [(i, im.id, im.image) for im in p.images if im.image and not len(im.vector)]
        enc = self.encoders.get("image")
        if not todo or enc is None:
            return {}
        out = {}
        for a in range(0, len(todo), EMBED_BATCH):
            part = todo[a:a + EMBED_BATCH]
            if self.metrics is not None:
                self.metrics.batch.observe(len(part))
            try:
                vecs = enc.embed([data for _, _, data in part])
            except SkulensError:
                # Say which image was refused (the request is refused whole: nothing is stored).
                for i, name, data in part:
                    try:
                        enc.decode(data)
                    except SkulensError as one:
                        where = f"product {products[i].id!r}" + (f" image {name!r}" if name else "")
                        raise type(one)(f"{where}: {one}") from None
                raise
            out.update(((i, name), v) for (i, name, _), v in zip(part, vecs))
        return out

    def _title_vectors(self, products: list[Product]) -> None:
        """Title embeddings for products that have a title and no text vector, in one batch,
        when the catalogue keeps title embeddings of this text model."""
        enc = self.encoders.get("text")
        if enc is None or self.catalog.text_dim != enc.dim:
            return
        todo = [p for p in products if p.text_vector is None and p.title.strip()]
        if todo:
            for p, v in zip(todo, enc.embed([p.title for p in todo])):
                p.text_vector = v

    def _upsert(self, batches, context=None) -> pb.UpsertResponse:
        """Each batch is one durable transaction. When one fails, the batches before it stay
        committed: the error says how many (and the trailing metadata skulens-committed-batches
        and skulens-committed-seq), so a client knows exactly what was stored."""
        n, seq, done = 0, 0, 0
        try:
            for req in batches:
                if not req.products:
                    continue
                timings = pb.Timings()
                pre = self._embed_batch(req.products)
                products = [self._product(p, timings, pre, i) for i, p in enumerate(req.products)]
                self._title_vectors(products)
                seq = self.catalog.upsert(products)
                n += len(products)
                done += 1
        except SkulensError as e:
            if context is not None:
                context.set_trailing_metadata((("skulens-committed-batches", str(done)),
                                               ("skulens-committed-seq", str(seq))))
            if done:
                raise type(e)(f"after {done} committed batch(es) ({n} products, seq {seq}): {e}") from None
            raise
        if n == 0:
            raise InvalidArgument("no products to upsert")
        return pb.UpsertResponse(seq=seq, upserted=n)

    @rpc
    def Upsert(self, request: pb.UpsertRequest, context) -> pb.UpsertResponse:
        return self._upsert([request])

    @rpc
    def UpsertStream(self, request_iterator, context) -> pb.UpsertResponse:
        return self._upsert(request_iterator, context)

    @rpc
    def Delete(self, request: pb.DeleteRequest, context) -> pb.DeleteResponse:
        if not request.ids:
            raise InvalidArgument("no ids to delete")
        n = self.catalog.delete(list(request.ids))
        return pb.DeleteResponse(deleted=n, seq=self.catalog.seq)  # >= the delete's own seq

    @rpc
    def AddImages(self, request: pb.AddImagesRequest, context) -> pb.ImagesResponse:
        if not request.images:
            raise InvalidArgument("no images to add")
        if len(request.images) >= MAX_IMAGES:
            raise InvalidArgument(f"{len(request.images)} images; a product holds at most {MAX_IMAGES}, "
                                  f"its main one included")
        fake = pb.Product(id=request.product_id, images=request.images)  # the same batching as Upsert's
        pre = self._embed_batch([fake])
        vecs, thumbs = self._images(request.product_id, request.images, pb.Timings(), pre, 0)
        seq, held = self.catalog.add_images(request.product_id, vecs, thumbs)
        return pb.ImagesResponse(seq=seq, images=held, changed=len(vecs))

    @rpc
    def RemoveImages(self, request: pb.RemoveImagesRequest, context) -> pb.ImagesResponse:
        seq, held, removed = self.catalog.remove_images(request.product_id, list(request.image_ids))
        return pb.ImagesResponse(seq=seq, images=held, changed=removed)
