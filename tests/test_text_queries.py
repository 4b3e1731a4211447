"""Text queries with the shipped encoders, through the real gRPC server: every category name as the
catalogue spells it, and the words shoppers type, find that category (issue 22: "Trouser" and
"a photo of a trouser" used to return sneakers and ankle boots, precision@10 = 0)."""

import numpy as np
import pytest

from skulens.data import datasets

pytestmark = pytest.mark.skipif(not datasets.available(), reason="apt-get install dataset-fashion-mnist")
SYNONYMS = {"pants": 1, "jeans": 1, "trousers": 1, "a photo of a trouser": 1, "boots": 9, "handbag": 8,
            "t-shirt": 0, "a photo of a sneaker": 7, "sweater": 2, "jacket": 4}
N = 1000   # test articles in the catalogue: ~100 per category


@pytest.fixture(scope="module")
def served(tmp_path_factory, shipped_repo):
    from conftest import serve_articles
    s = serve_articles(shipped_repo, str(tmp_path_factory.mktemp("data")), N)
    yield s, datasets.load("test")[1][:N]
    s.stop()


def _precision(server, labels, text: str, want: int) -> float:
    from skulens.client import Client
    with Client(server.target) as c:
        hits = c.search(text=text, top_k=10)
    return float(np.mean([labels[int(h.product_id[1:])] == want for h in hits]))


@pytest.mark.parametrize("c", range(10), ids=datasets.CLASSES)
def test_every_category_name_finds_its_category(served, c):
    server, labels = served
    for text in (datasets.CLASSES[c], f"a photo of a {datasets.CLASSES[c].lower()}", datasets.CATEGORY[c]):
        assert _precision(server, labels, text, c) >= 0.7, text


@pytest.mark.parametrize("text", sorted(SYNONYMS))
def test_what_shoppers_type_finds_the_category(served, text):
    server, labels = served
    assert _precision(server, labels, text, SYNONYMS[text]) >= 0.7
