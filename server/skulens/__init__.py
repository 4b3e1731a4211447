"""skulens: product-image retrieval (exact and HNSW cosine search)."""

__version__ = "0.1.0"
