"""Every limit and enum the API enforces, defined once.

The catalogue, the service, the filters and the encoders all read these; the
proto's comments name the same numbers. A change here is a change of the API.
"""

from __future__ import annotations

# Products
MAX_ID_BYTES = 256            # a product id, UTF-8
MAX_TEXT = 4096               # sku, title, category, an attribute value, a filter value, a text query
MAX_ATTRIBUTE_KEY = 256
MAX_ATTRIBUTES = 64
MAX_THUMBNAIL = 1 << 20       # a stored reference thumbnail, bytes
MAX_IMAGES = 16               # reference images of one product, its main image included
MAX_IMAGE_ID_BYTES = 64       # an image's name within its product, UTF-8

# Searches
MAX_TOP_K = 1000              # hits one search returns
MAX_REGIONS = 32              # regions one SearchScene returns
MAX_CANDIDATES = 128          # regions a SearchScene embeds in one batch (the cost of a scene)
MAX_EF = 10_000               # the HNSW walk's candidate list
MODES = ("auto", "exact", "ann")
MAX_SEQ_WAIT_S = 10.0         # a Search's min_seq wait, whatever its deadline
STORAGES = ("fp32", "fp16", "int8")

# Filters
MAX_CLAUSES = 16
MAX_TERMS = 256

# Images (refused from the header, before decoding; security/images.py)
MAX_IMAGE_BYTES = 8 << 20
MAX_PIXELS = 40_000_000
MAX_ASPECT = 16                            # longer side / shorter side
IMAGE_FORMATS = ("JPEG", "PNG", "WEBP")    # decoded; everything else is refused

# Service
MAX_STREAMS = 64                           # open SearchStream/UpsertStream calls (beyond: RESOURCE_EXHAUSTED)
