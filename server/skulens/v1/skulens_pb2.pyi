from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Mode(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    MODE_AUTO: _ClassVar[Mode]
    MODE_EXACT: _ClassVar[Mode]
    MODE_ANN: _ClassVar[Mode]
MODE_AUTO: Mode
MODE_EXACT: Mode
MODE_ANN: Mode

class Query(_message.Message):
    __slots__ = ("image", "text", "vector", "product_id")
    IMAGE_FIELD_NUMBER: _ClassVar[int]
    TEXT_FIELD_NUMBER: _ClassVar[int]
    VECTOR_FIELD_NUMBER: _ClassVar[int]
    PRODUCT_ID_FIELD_NUMBER: _ClassVar[int]
    image: bytes
    text: str
    vector: Vector
    product_id: str
    def __init__(self, image: _Optional[bytes] = ..., text: _Optional[str] = ..., vector: _Optional[_Union[Vector, _Mapping]] = ..., product_id: _Optional[str] = ...) -> None: ...

class Vector(_message.Message):
    __slots__ = ("values", "le_float32")
    VALUES_FIELD_NUMBER: _ClassVar[int]
    LE_FLOAT32_FIELD_NUMBER: _ClassVar[int]
    values: _containers.RepeatedScalarFieldContainer[float]
    le_float32: bytes
    def __init__(self, values: _Optional[_Iterable[float]] = ..., le_float32: _Optional[bytes] = ...) -> None: ...

class Term(_message.Message):
    __slots__ = ("key", "value")
    KEY_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    key: str
    value: str
    def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...

class Clause(_message.Message):
    __slots__ = ("any",)
    ANY_FIELD_NUMBER: _ClassVar[int]
    any: _containers.RepeatedCompositeFieldContainer[Term]
    def __init__(self, any: _Optional[_Iterable[_Union[Term, _Mapping]]] = ...) -> None: ...

class Filter(_message.Message):
    __slots__ = ("all", "expression")
    ALL_FIELD_NUMBER: _ClassVar[int]
    EXPRESSION_FIELD_NUMBER: _ClassVar[int]
    all: _containers.RepeatedCompositeFieldContainer[Clause]
    expression: str
    def __init__(self, all: _Optional[_Iterable[_Union[Clause, _Mapping]]] = ..., expression: _Optional[str] = ...) -> None: ...

class SearchRequest(_message.Message):
    __slots__ = ("query", "top_k", "filter", "mode", "ef", "include_metadata", "min_seq", "images_per_hit")
    QUERY_FIELD_NUMBER: _ClassVar[int]
    TOP_K_FIELD_NUMBER: _ClassVar[int]
    FILTER_FIELD_NUMBER: _ClassVar[int]
    MODE_FIELD_NUMBER: _ClassVar[int]
    EF_FIELD_NUMBER: _ClassVar[int]
    INCLUDE_METADATA_FIELD_NUMBER: _ClassVar[int]
    MIN_SEQ_FIELD_NUMBER: _ClassVar[int]
    IMAGES_PER_HIT_FIELD_NUMBER: _ClassVar[int]
    query: Query
    top_k: int
    filter: Filter
    mode: Mode
    ef: int
    include_metadata: bool
    min_seq: int
    images_per_hit: int
    def __init__(self, query: _Optional[_Union[Query, _Mapping]] = ..., top_k: _Optional[int] = ..., filter: _Optional[_Union[Filter, _Mapping]] = ..., mode: _Optional[_Union[Mode, str]] = ..., ef: _Optional[int] = ..., include_metadata: _Optional[bool] = ..., min_seq: _Optional[int] = ..., images_per_hit: _Optional[int] = ...) -> None: ...

class Hit(_message.Message):
    __slots__ = ("product_id", "score", "sku", "title", "category", "image_id", "images")
    PRODUCT_ID_FIELD_NUMBER: _ClassVar[int]
    SCORE_FIELD_NUMBER: _ClassVar[int]
    SKU_FIELD_NUMBER: _ClassVar[int]
    TITLE_FIELD_NUMBER: _ClassVar[int]
    CATEGORY_FIELD_NUMBER: _ClassVar[int]
    IMAGE_ID_FIELD_NUMBER: _ClassVar[int]
    IMAGES_FIELD_NUMBER: _ClassVar[int]
    product_id: str
    score: float
    sku: str
    title: str
    category: str
    image_id: str
    images: _containers.RepeatedCompositeFieldContainer[ImageScore]
    def __init__(self, product_id: _Optional[str] = ..., score: _Optional[float] = ..., sku: _Optional[str] = ..., title: _Optional[str] = ..., category: _Optional[str] = ..., image_id: _Optional[str] = ..., images: _Optional[_Iterable[_Union[ImageScore, _Mapping]]] = ...) -> None: ...

class ImageScore(_message.Message):
    __slots__ = ("image_id", "score")
    IMAGE_ID_FIELD_NUMBER: _ClassVar[int]
    SCORE_FIELD_NUMBER: _ClassVar[int]
    image_id: str
    score: float
    def __init__(self, image_id: _Optional[str] = ..., score: _Optional[float] = ...) -> None: ...

class Timings(_message.Message):
    __slots__ = ("decode_us", "preprocess_us", "encode_us", "search_us", "total_us", "cache_hit", "propose_us")
    DECODE_US_FIELD_NUMBER: _ClassVar[int]
    PREPROCESS_US_FIELD_NUMBER: _ClassVar[int]
    ENCODE_US_FIELD_NUMBER: _ClassVar[int]
    SEARCH_US_FIELD_NUMBER: _ClassVar[int]
    TOTAL_US_FIELD_NUMBER: _ClassVar[int]
    CACHE_HIT_FIELD_NUMBER: _ClassVar[int]
    PROPOSE_US_FIELD_NUMBER: _ClassVar[int]
    decode_us: int
    preprocess_us: int
    encode_us: int
    search_us: int
    total_us: int
    cache_hit: bool
    propose_us: int
    def __init__(self, decode_us: _Optional[int] = ..., preprocess_us: _Optional[int] = ..., encode_us: _Optional[int] = ..., search_us: _Optional[int] = ..., total_us: _Optional[int] = ..., cache_hit: _Optional[bool] = ..., propose_us: _Optional[int] = ...) -> None: ...

class SearchResponse(_message.Message):
    __slots__ = ("hits", "timings", "seq", "missing_shards")
    HITS_FIELD_NUMBER: _ClassVar[int]
    TIMINGS_FIELD_NUMBER: _ClassVar[int]
    SEQ_FIELD_NUMBER: _ClassVar[int]
    MISSING_SHARDS_FIELD_NUMBER: _ClassVar[int]
    hits: _containers.RepeatedCompositeFieldContainer[Hit]
    timings: Timings
    seq: int
    missing_shards: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, hits: _Optional[_Iterable[_Union[Hit, _Mapping]]] = ..., timings: _Optional[_Union[Timings, _Mapping]] = ..., seq: _Optional[int] = ..., missing_shards: _Optional[_Iterable[str]] = ...) -> None: ...

class StreamHits(_message.Message):
    __slots__ = ("frame", "hits", "fused", "stable", "stable_product_id", "confidence", "timings")
    FRAME_FIELD_NUMBER: _ClassVar[int]
    HITS_FIELD_NUMBER: _ClassVar[int]
    FUSED_FIELD_NUMBER: _ClassVar[int]
    STABLE_FIELD_NUMBER: _ClassVar[int]
    STABLE_PRODUCT_ID_FIELD_NUMBER: _ClassVar[int]
    CONFIDENCE_FIELD_NUMBER: _ClassVar[int]
    TIMINGS_FIELD_NUMBER: _ClassVar[int]
    frame: int
    hits: _containers.RepeatedCompositeFieldContainer[Hit]
    fused: _containers.RepeatedCompositeFieldContainer[Hit]
    stable: bool
    stable_product_id: str
    confidence: float
    timings: Timings
    def __init__(self, frame: _Optional[int] = ..., hits: _Optional[_Iterable[_Union[Hit, _Mapping]]] = ..., fused: _Optional[_Iterable[_Union[Hit, _Mapping]]] = ..., stable: _Optional[bool] = ..., stable_product_id: _Optional[str] = ..., confidence: _Optional[float] = ..., timings: _Optional[_Union[Timings, _Mapping]] = ...) -> None: ...

class Product(_message.Message):
    __slots__ = ("id", "sku", "title", "category", "attributes", "vector", "image", "text_vector", "created", "updated", "thumbnail", "images")
    class AttributesEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    ID_FIELD_NUMBER: _ClassVar[int]
    SKU_FIELD_NUMBER: _ClassVar[int]
    TITLE_FIELD_NUMBER: _ClassVar[int]
    CATEGORY_FIELD_NUMBER: _ClassVar[int]
    ATTRIBUTES_FIELD_NUMBER: _ClassVar[int]
    VECTOR_FIELD_NUMBER: _ClassVar[int]
    IMAGE_FIELD_NUMBER: _ClassVar[int]
    TEXT_VECTOR_FIELD_NUMBER: _ClassVar[int]
    CREATED_FIELD_NUMBER: _ClassVar[int]
    UPDATED_FIELD_NUMBER: _ClassVar[int]
    THUMBNAIL_FIELD_NUMBER: _ClassVar[int]
    IMAGES_FIELD_NUMBER: _ClassVar[int]
    id: str
    sku: str
    title: str
    category: str
    attributes: _containers.ScalarMap[str, str]
    vector: _containers.RepeatedScalarFieldContainer[float]
    image: bytes
    text_vector: _containers.RepeatedScalarFieldContainer[float]
    created: float
    updated: float
    thumbnail: bytes
    images: _containers.RepeatedCompositeFieldContainer[ProductImage]
    def __init__(self, id: _Optional[str] = ..., sku: _Optional[str] = ..., title: _Optional[str] = ..., category: _Optional[str] = ..., attributes: _Optional[_Mapping[str, str]] = ..., vector: _Optional[_Iterable[float]] = ..., image: _Optional[bytes] = ..., text_vector: _Optional[_Iterable[float]] = ..., created: _Optional[float] = ..., updated: _Optional[float] = ..., thumbnail: _Optional[bytes] = ..., images: _Optional[_Iterable[_Union[ProductImage, _Mapping]]] = ...) -> None: ...

class ProductImage(_message.Message):
    __slots__ = ("id", "image", "vector", "thumbnail")
    ID_FIELD_NUMBER: _ClassVar[int]
    IMAGE_FIELD_NUMBER: _ClassVar[int]
    VECTOR_FIELD_NUMBER: _ClassVar[int]
    THUMBNAIL_FIELD_NUMBER: _ClassVar[int]
    id: str
    image: bytes
    vector: _containers.RepeatedScalarFieldContainer[float]
    thumbnail: bytes
    def __init__(self, id: _Optional[str] = ..., image: _Optional[bytes] = ..., vector: _Optional[_Iterable[float]] = ..., thumbnail: _Optional[bytes] = ...) -> None: ...

class AddImagesRequest(_message.Message):
    __slots__ = ("product_id", "images")
    PRODUCT_ID_FIELD_NUMBER: _ClassVar[int]
    IMAGES_FIELD_NUMBER: _ClassVar[int]
    product_id: str
    images: _containers.RepeatedCompositeFieldContainer[ProductImage]
    def __init__(self, product_id: _Optional[str] = ..., images: _Optional[_Iterable[_Union[ProductImage, _Mapping]]] = ...) -> None: ...

class RemoveImagesRequest(_message.Message):
    __slots__ = ("product_id", "image_ids")
    PRODUCT_ID_FIELD_NUMBER: _ClassVar[int]
    IMAGE_IDS_FIELD_NUMBER: _ClassVar[int]
    product_id: str
    image_ids: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, product_id: _Optional[str] = ..., image_ids: _Optional[_Iterable[str]] = ...) -> None: ...

class ImagesResponse(_message.Message):
    __slots__ = ("seq", "images", "changed")
    SEQ_FIELD_NUMBER: _ClassVar[int]
    IMAGES_FIELD_NUMBER: _ClassVar[int]
    CHANGED_FIELD_NUMBER: _ClassVar[int]
    seq: int
    images: int
    changed: int
    def __init__(self, seq: _Optional[int] = ..., images: _Optional[int] = ..., changed: _Optional[int] = ...) -> None: ...

class UpsertRequest(_message.Message):
    __slots__ = ("products",)
    PRODUCTS_FIELD_NUMBER: _ClassVar[int]
    products: _containers.RepeatedCompositeFieldContainer[Product]
    def __init__(self, products: _Optional[_Iterable[_Union[Product, _Mapping]]] = ...) -> None: ...

class UpsertResponse(_message.Message):
    __slots__ = ("seq", "upserted")
    SEQ_FIELD_NUMBER: _ClassVar[int]
    UPSERTED_FIELD_NUMBER: _ClassVar[int]
    seq: int
    upserted: int
    def __init__(self, seq: _Optional[int] = ..., upserted: _Optional[int] = ...) -> None: ...

class DeleteRequest(_message.Message):
    __slots__ = ("ids",)
    IDS_FIELD_NUMBER: _ClassVar[int]
    ids: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, ids: _Optional[_Iterable[str]] = ...) -> None: ...

class DeleteResponse(_message.Message):
    __slots__ = ("deleted", "seq")
    DELETED_FIELD_NUMBER: _ClassVar[int]
    SEQ_FIELD_NUMBER: _ClassVar[int]
    deleted: int
    seq: int
    def __init__(self, deleted: _Optional[int] = ..., seq: _Optional[int] = ...) -> None: ...

class GetProductRequest(_message.Message):
    __slots__ = ("id", "include_vector", "include_thumbnail")
    ID_FIELD_NUMBER: _ClassVar[int]
    INCLUDE_VECTOR_FIELD_NUMBER: _ClassVar[int]
    INCLUDE_THUMBNAIL_FIELD_NUMBER: _ClassVar[int]
    id: str
    include_vector: bool
    include_thumbnail: bool
    def __init__(self, id: _Optional[str] = ..., include_vector: _Optional[bool] = ..., include_thumbnail: _Optional[bool] = ...) -> None: ...

class EmbedRequest(_message.Message):
    __slots__ = ("image", "text")
    IMAGE_FIELD_NUMBER: _ClassVar[int]
    TEXT_FIELD_NUMBER: _ClassVar[int]
    image: bytes
    text: str
    def __init__(self, image: _Optional[bytes] = ..., text: _Optional[str] = ...) -> None: ...

class EmbedResponse(_message.Message):
    __slots__ = ("vector", "model", "timings")
    VECTOR_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    TIMINGS_FIELD_NUMBER: _ClassVar[int]
    vector: _containers.RepeatedScalarFieldContainer[float]
    model: str
    timings: Timings
    def __init__(self, vector: _Optional[_Iterable[float]] = ..., model: _Optional[str] = ..., timings: _Optional[_Union[Timings, _Mapping]] = ...) -> None: ...

class StatsRequest(_message.Message):
    __slots__ = ("min_seq",)
    MIN_SEQ_FIELD_NUMBER: _ClassVar[int]
    min_seq: int
    def __init__(self, min_seq: _Optional[int] = ...) -> None: ...

class StatsResponse(_message.Message):
    __slots__ = ("products", "dim", "json")
    PRODUCTS_FIELD_NUMBER: _ClassVar[int]
    DIM_FIELD_NUMBER: _ClassVar[int]
    JSON_FIELD_NUMBER: _ClassVar[int]
    products: int
    dim: int
    json: str
    def __init__(self, products: _Optional[int] = ..., dim: _Optional[int] = ..., json: _Optional[str] = ...) -> None: ...

class SceneRequest(_message.Message):
    __slots__ = ("image", "top_k", "filter", "max_regions", "min_objectness", "include_metadata", "min_seq")
    IMAGE_FIELD_NUMBER: _ClassVar[int]
    TOP_K_FIELD_NUMBER: _ClassVar[int]
    FILTER_FIELD_NUMBER: _ClassVar[int]
    MAX_REGIONS_FIELD_NUMBER: _ClassVar[int]
    MIN_OBJECTNESS_FIELD_NUMBER: _ClassVar[int]
    INCLUDE_METADATA_FIELD_NUMBER: _ClassVar[int]
    MIN_SEQ_FIELD_NUMBER: _ClassVar[int]
    image: bytes
    top_k: int
    filter: Filter
    max_regions: int
    min_objectness: float
    include_metadata: bool
    min_seq: int
    def __init__(self, image: _Optional[bytes] = ..., top_k: _Optional[int] = ..., filter: _Optional[_Union[Filter, _Mapping]] = ..., max_regions: _Optional[int] = ..., min_objectness: _Optional[float] = ..., include_metadata: _Optional[bool] = ..., min_seq: _Optional[int] = ...) -> None: ...

class Box(_message.Message):
    __slots__ = ("x0", "y0", "x1", "y1")
    X0_FIELD_NUMBER: _ClassVar[int]
    Y0_FIELD_NUMBER: _ClassVar[int]
    X1_FIELD_NUMBER: _ClassVar[int]
    Y1_FIELD_NUMBER: _ClassVar[int]
    x0: int
    y0: int
    x1: int
    y1: int
    def __init__(self, x0: _Optional[int] = ..., y0: _Optional[int] = ..., x1: _Optional[int] = ..., y1: _Optional[int] = ...) -> None: ...

class Region(_message.Message):
    __slots__ = ("box", "objectness", "hits", "track", "fused", "stable", "stable_product_id")
    BOX_FIELD_NUMBER: _ClassVar[int]
    OBJECTNESS_FIELD_NUMBER: _ClassVar[int]
    HITS_FIELD_NUMBER: _ClassVar[int]
    TRACK_FIELD_NUMBER: _ClassVar[int]
    FUSED_FIELD_NUMBER: _ClassVar[int]
    STABLE_FIELD_NUMBER: _ClassVar[int]
    STABLE_PRODUCT_ID_FIELD_NUMBER: _ClassVar[int]
    box: Box
    objectness: float
    hits: _containers.RepeatedCompositeFieldContainer[Hit]
    track: int
    fused: _containers.RepeatedCompositeFieldContainer[Hit]
    stable: bool
    stable_product_id: str
    def __init__(self, box: _Optional[_Union[Box, _Mapping]] = ..., objectness: _Optional[float] = ..., hits: _Optional[_Iterable[_Union[Hit, _Mapping]]] = ..., track: _Optional[int] = ..., fused: _Optional[_Iterable[_Union[Hit, _Mapping]]] = ..., stable: _Optional[bool] = ..., stable_product_id: _Optional[str] = ...) -> None: ...

class SceneResponse(_message.Message):
    __slots__ = ("regions", "timings", "seq", "candidates")
    REGIONS_FIELD_NUMBER: _ClassVar[int]
    TIMINGS_FIELD_NUMBER: _ClassVar[int]
    SEQ_FIELD_NUMBER: _ClassVar[int]
    CANDIDATES_FIELD_NUMBER: _ClassVar[int]
    regions: _containers.RepeatedCompositeFieldContainer[Region]
    timings: Timings
    seq: int
    candidates: int
    def __init__(self, regions: _Optional[_Iterable[_Union[Region, _Mapping]]] = ..., timings: _Optional[_Union[Timings, _Mapping]] = ..., seq: _Optional[int] = ..., candidates: _Optional[int] = ...) -> None: ...
