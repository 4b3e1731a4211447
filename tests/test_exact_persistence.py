"""ExactIndex.save/load: rows restored bit for bit; damaged files refused cleanly."""

import numpy as np
import pytest

from skulens.index import STORAGES, ExactIndex
from synthetic import clustered


@pytest.mark.parametrize("storage", STORAGES)
def test_round_trip_is_bit_identical(tmp_path, storage):
    x, q = clustered(3000, 40, seed=1), clustered(20, 40, seed=2)
    a = ExactIndex(40, storage)
    a.add(x)
    a.remove(np.arange(0, 3000, 7))
    a.set([7], x[8:9])  # a revived row
    a.save(tmp_path / "e.bin")
    b = ExactIndex(40, storage)
    b.add(x[:5])  # load replaces whatever was there
    b.load(tmp_path / "e.bin")
    assert len(b) == len(a) and b.ntotal == a.ntotal and 15 in b and 7 in b and 0 not in b and 14 not in b
    for (sa, ia), (sb, ib) in [(a.search(q, 10), b.search(q, 10))]:
        np.testing.assert_array_equal(sa, sb)
        np.testing.assert_array_equal(ia, ib)
    np.testing.assert_array_equal(a.reconstruct([1, 2, 7]), b.reconstruct([1, 2, 7]))
    b.add(x[:3])  # and it keeps working as a normal index
    assert b.ntotal == 3003


def test_empty_round_trip(tmp_path):
    ExactIndex(8).save(tmp_path / "e.bin")
    b = ExactIndex(8)
    b.load(tmp_path / "e.bin")
    assert len(b) == 0 and b.ntotal == 0


@pytest.mark.parametrize("damage", ["truncate", "garbage", "dim", "storage", "livebits"])
def test_damaged_files_are_refused_never_half_loaded(tmp_path, damage):
    """A file refused at its header leaves the index as it was; one that fails
    later leaves it empty. Either way no partial contents survive."""
    x = clustered(500, 16, seed=1)
    a = ExactIndex(16, "int8")
    a.add(x)
    path = tmp_path / "e.bin"
    a.save(path)
    b = ExactIndex(16, "int8")
    if damage == "truncate":
        path.write_bytes(path.read_bytes()[:-100])
    elif damage == "garbage":
        path.write_bytes(b"\x00" * 4096)
    elif damage == "dim":
        b = ExactIndex(17, "int8")
    elif damage == "storage":
        b = ExactIndex(16, "fp16")
    else:
        data = bytearray(path.read_bytes())
        header, row = 48, a._ix.row_bytes
        data[header + 500 * row] ^= 0x01  # flip one live bit: count no longer matches
        path.write_bytes(bytes(data))
    b.add(np.ones((10, b.dim), np.float32))
    with pytest.raises(ValueError):
        b.load(path)
    header_refused = damage in ("garbage", "dim", "storage")
    assert len(b) == b.ntotal == (10 if header_refused else 0)
    assert len(b.search(np.ones(b.dim), 3)[1][0]) == len(b.search(np.ones(b.dim), 3)[0][0]) == min(3, len(b))
