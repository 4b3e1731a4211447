"""The skulens client: needs only grpcio, protobuf and the generated `skulens.v1` code
(installable on its own as `skulens-client`, see clients/python/).

    from skulens.client import Client
    with Client("127.0.0.1:50051") as c:
        for hit in c.search(vector=v, top_k=5, filters="category=shoes"):
            print(hit.product_id, hit.score)
"""

from .client import MODES, AsyncClient, Client, product_message, scene_request, search_request
from .ingest import ingest

__all__ = ["Client", "AsyncClient", "search_request", "scene_request", "product_message", "ingest", "MODES"]
