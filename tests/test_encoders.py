"""The ONNX Runtime image encoder on real photos: decode (JPEG draft mode, PNG,
WebP), EXIF orientation, bad and oversized input, the query cache, and image
search through the gRPC service."""

import io

import grpc
import numpy as np
import pytest
from PIL import Image

import onnx_models
from skulens import encode as encoders
from skulens.client import Client
from skulens.errors import InvalidArgument, ResourceExhausted
from skulens.server import Config, Server
from skulens.v1 import skulens_pb2 as pb

skdata = pytest.importorskip("skimage.data", reason="scikit-image provides the real photos")
PHOTOS = ("chelsea", "coffee", "astronaut", "rocket", "camera", "coins")


def photo(name: str) -> Image.Image:
    return Image.fromarray(getattr(skdata, name)()).convert("RGB")


def encode(im: Image.Image, fmt: str = "JPEG", **kw) -> bytes:
    b = io.BytesIO()
    im.save(b, fmt, **kw)
    return b.getvalue()


@pytest.fixture(scope="module")
def repo(tmp_path_factory):
    r = tmp_path_factory.mktemp("model_repo")
    onnx_models.tiny_image_encoder(str(r))
    return str(r)


@pytest.fixture
def enc(repo):
    e = encoders.load(repo)["image"]
    e.warm_up()
    return e


def test_formats_agree(enc):
    im = photo("coffee")
    vs = [enc.embed_request(encode(im, fmt, **kw)) for fmt, kw in
          (("PNG", {}), ("WEBP", {"lossless": True}), ("JPEG", {"quality": 95}))]
    for v in vs:
        assert v.shape == (enc.dim,) and abs(np.linalg.norm(v) - 1) < 1e-5
    assert vs[0] @ vs[1] > 0.9999      # lossless: the same pixels
    assert vs[0] @ vs[2] > 0.99        # JPEG (decoded in draft mode): nearly


@pytest.mark.parametrize("mode,fmt", [(m, "PNG") for m in ("RGB", "L", "RGBA", "P", "LA", "1", "I;16")]
                         + [("RGB", "JPEG"), ("L", "JPEG")])
def test_preprocessing_shortcuts_give_the_same_pixels(enc, mode, fmt):
    """Grey images are resized as grey and normalised channel by channel: the model must get
    exactly what the plain route (RGB first, resize, crop, transpose, normalise) gives."""
    src = Image.fromarray(skdata.camera()) if mode in ("L", "1", "LA", "I;16") else photo("astronaut")
    src = Image.fromarray(np.asarray(src, np.uint16) * 200) if mode == "I;16" else src.convert(mode)
    data = encode(src, fmt)
    from PIL import ImageOps
    im = Image.open(io.BytesIO(data))
    if fmt == "JPEG":
        im.draft("RGB", (enc.size, enc.size))
    im = ImageOps.exif_transpose(im).convert("RGB")
    s = enc.size / min(im.size)
    im = im.resize((max(enc.size, round(im.width * s)), max(enc.size, round(im.height * s))),
                   Image.BILINEAR, reducing_gap=2.0)
    left, top = (im.width - enc.size) // 2, (im.height - enc.size) // 2
    px = np.asarray(im.crop((left, top, left + enc.size, top + enc.size)))[None]
    want = (px.transpose(0, 3, 1, 2).astype(np.float32) - enc.mean) / enc.std
    np.testing.assert_array_equal(enc.preprocess([enc.decode(data)]), want)


def test_exif_orientation_is_honoured(enc):
    im = photo("astronaut")
    upright = enc.embed_request(encode(im, "PNG"))
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to display": store the pixels turned the other way
    stored = im.transpose(Image.Transpose.ROTATE_90)
    tagged = enc.embed_request(encode(stored, "JPEG", quality=95, exif=exif.tobytes()))
    untagged = enc.embed_request(encode(stored, "JPEG", quality=95))
    assert tagged @ upright > 0.98 and tagged @ upright > untagged @ upright + 0.01


def test_distinct_photos_differ_and_timings_are_filled(enc):
    v = {n: enc.embed_request(encode(photo(n), "PNG")) for n in PHOTOS}
    for a in PHOTOS:
        best = max((b for b in PHOTOS if b != a), key=lambda b: v[a] @ v[b])
        assert v[a] @ v[a] > v[a] @ v[best]
    t = pb.Timings()
    enc.embed_request(encode(photo("rocket"), "JPEG", quality=80), t)
    assert t.decode_us > 0 and t.preprocess_us > 0 and t.encode_us > 0 and not t.cache_hit


def test_cache_reuses_identical_bytes(enc):
    data = encode(photo("chelsea"), "PNG")
    a = enc.embed_request(data)
    t = pb.Timings()
    b = enc.embed_request(data, t)
    assert t.cache_hit and np.array_equal(a, b)
    st = enc.cache.stats()
    assert st["hits"] == 1 and st["misses"] == 1 and st["hit_rate"] == 0.5


@pytest.mark.parametrize("data,err", [
    (b"", InvalidArgument), (b"not an image at all", InvalidArgument),
    (encode(Image.new("RGB", (10, 10)), "PNG")[:30], InvalidArgument),
    (b"\0" * (encoders.MAX_IMAGE_BYTES + 1), ResourceExhausted),
])
def test_bad_images(enc, data, err):
    with pytest.raises(err):
        enc.embed_request(data)


def test_decompression_bomb_is_refused(enc):
    big = encode(Image.new("L", (8000, 6000)), "PNG")  # 48 Mpixel of zeros: a small file
    with pytest.raises(ResourceExhausted, match="pixels"):
        enc.embed_request(big)


def test_image_search_through_the_service(tmp_path, repo):
    encs = encoders.load(repo)
    s = Server(Config(data=str(tmp_path / "d"), dim=encs["image"].dim, port=0), encoders=encs)
    try:
        with Client(s.target) as c:
            imgs = {n: encode(photo(n), "PNG") for n in PHOTOS}
            c.upsert([dict(id=n, title=n, image=b) for n, b in imgs.items()])
            for n in PHOTOS:
                r = c.search_full(image=encode(photo(n), "JPEG", quality=90), top_k=3)
                assert r.hits[0].product_id == n
                assert r.timings.decode_us > 0 and r.timings.encode_us > 0
            again = c.search_full(image=imgs["coins"], top_k=1)
            assert again.timings.cache_hit  # the upsert already embedded these bytes
            v = c.embed(image=imgs["coffee"])
            assert len(v) == encs["image"].dim
            assert "image" in c.stats()["encoders"]
            with pytest.raises(grpc.RpcError) as e:
                c.search(image=b"garbage")
            assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "decode" in e.value.details()
            assert s.catalog.thumbnail("coffee")[:2] == b"\xff\xd8"  # kept as a JPEG thumbnail
    finally:
        s.stop()


def test_text_queries_search_titles(tmp_path, repo):
    words = ["red", "blue", "leather", "canvas", "boot", "sneaker", "bag", "dress", "coat", "wool"]
    onnx_models.tiny_text_encoder(repo, words)
    encs = encoders.load(repo)
    assert encs["text"].dim != encs["image"].dim  # not aligned: titles get their own index
    s = Server(Config(data=str(tmp_path / "d"), dim=encs["image"].dim, port=0), encoders=encs)
    try:
        with Client(s.target) as c:
            titles = {"a": "red leather boot", "b": "blue canvas sneaker", "c": "wool coat", "d": "canvas bag"}
            c.upsert([dict(id=k, title=t, category="x" if k in "ab" else "y", image=encode(photo(n), "PNG"))
                      for (k, t), n in zip(titles.items(), PHOTOS)])
            assert c.search(text="leather boot", top_k=1)[0].product_id == "a"
            assert c.search(text="a canvas bag", top_k=1)[0].product_id == "d"
            assert [h.product_id for h in c.search(text="canvas", top_k=4, filters="category=x")] == ["b", "a"]
            assert len(c.embed(text="red boot")) == encs["text"].dim
            with pytest.raises(grpc.RpcError) as e:
                c.search(text="   ")
            assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    finally:
        s.stop()


def test_queries_and_batches_run_on_sessions_that_do_not_spin(enc):
    """A query runs on one intra-op thread that sleeps when idle; a batch on the batch session;
    both give the same vectors (bench/encoder_bench.py measured why: CPU per query)."""
    r = enc.runner
    opts = r.session.get_session_options()
    assert opts.intra_op_num_threads == 1
    assert opts.get_session_config_entry("session.intra_op.allow_spinning") == "0"
    ims = [photo(n) for n in ("astronaut", "coffee", "chelsea", "rocket")] * 3
    one = np.concatenate([enc.embed([im]) for im in ims])
    many = enc.embed(ims)
    assert r._batch is not None and len(ims) >= r.BATCH_ROWS
    assert r._batch.get_session_options().get_session_config_entry("session.intra_op.allow_spinning") == "0"
    np.testing.assert_allclose(one, many, atol=1e-5)
