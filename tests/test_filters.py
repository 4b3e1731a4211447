"""Filter spellings, their errors, and postings bitsets against brute force."""

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from skulens.catalog import filters as flt
from skulens.errors import InvalidArgument


def test_three_spellings_agree():
    want = ((("category", "shoes"), ("category", "boots")), (("color", "red"),))
    assert flt.parse({"category": ["shoes", "boots"], "color": "red"}) == want
    assert flt.parse("category=shoes OR category=boots AND color=red") == want
    assert flt.parse([[("category", "shoes"), ("category", "boots")], [("color", "red")]]) == want
    assert flt.parse('brand="Acme Co" AND size = 42') == ((("brand", "Acme Co"),), (("size", "42"),))
    assert flt.parse(None) == () and flt.parse("") == () and flt.parse({}) == ()


@pytest.mark.parametrize("bad", ["category", "=x", "a= ", {"a": []}, {"a": 3}, [["a"]], [[]], 5,
                                 " AND ".join(f"k{i}=v" for i in range(20))])
def test_bad_filters_are_invalid_argument(bad):
    with pytest.raises(InvalidArgument):
        flt.parse(bad)


def _brute(clauses, products, n):
    ok = np.zeros(n, bool)
    for slot, terms in products.items():
        ok[slot] = all(any(t in terms for t in c) for c in clauses)
    return ok


@settings(max_examples=60, deadline=None)
@given(st.data())
def test_mask_matches_brute_force(data):
    n = data.draw(st.integers(1, 3000))
    rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1)))
    p = flt.Postings()
    p.grow(n)
    products = {}
    for slot in rng.choice(n, size=min(n, 2000), replace=False).tolist():
        terms = flt.terms_of(f"c{rng.integers(3)}", {"color": f"k{rng.integers(2)}", "sz": f"s{rng.integers(50)}"})
        products[slot] = terms
        p.add(slot, terms)
    for slot in list(products)[: len(products) // 3]:  # churn: remove a third
        p.remove(slot, products.pop(slot))
    clauses = flt.parse(data.draw(st.sampled_from([
        "category=c0", "category=c0 OR category=c2 AND color=k1", "sz=s3 OR color=k0",
        "category=c1 AND sz=s7", "category=nope", "color=k0 AND color=k1"])))
    got = p.mask(clauses, n).unpacked()[:n]
    np.testing.assert_array_equal(got, _brute(clauses, products, n))
    assert p.mask(clauses, n).count() == _brute(clauses, products, n).sum()


def test_dense_postings_follow_growth_and_shrink():
    p = flt.Postings()
    p.grow(100)
    for s in range(5000):
        p.grow(s + 1)
        p.add(s, (("category", "a"),))
    assert p._p[("category", "a")].bits is not None
    m = p.mask(((("category", "a"),),), 5000).unpacked()[:5000]
    assert m.all()
    for s in range(0, 4900):
        p.remove(s, (("category", "a"),))
    assert p._p[("category", "a")].bits is None
    m = p.mask(((("category", "a"),),), 5000).unpacked()[:5000]
    assert m.sum() == 100 and m[4900:].all()


def test_bulk_load_equals_one_by_one():
    rng = np.random.default_rng(3)
    items = [(s, flt.terms_of(f"c{rng.integers(4)}", {"k": f"v{rng.integers(3000)}"})) for s in range(20000)]
    a, b = flt.Postings(), flt.Postings()
    a.grow(20000)
    b.grow(20000)
    for s, t in items:
        a.add(s, t)
    b.bulk_load(items)
    for clauses in (flt.parse("category=c1"), flt.parse("k=v7 OR category=c3"), flt.parse("k=v1 AND category=c0")):
        np.testing.assert_array_equal(a.mask(clauses, 20000).packed, b.mask(clauses, 20000).packed)
    assert (b._p[("category", "c1")].bits is not None) and b._p[("k", "v1")].bits is None
    b.remove(5, items[5][1])  # and it stays maintainable
    a.remove(5, items[5][1])
    np.testing.assert_array_equal(a.mask(flt.parse("category=c1"), 20000).packed,
                                  b.mask(flt.parse("category=c1"), 20000).packed)
