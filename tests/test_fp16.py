"""The index's own binary16 conversion rounds exactly like IEEE (numpy's float16)."""

import numpy as np

from skulens.index import _kernel


def test_every_half_round_trips():
    h = np.arange(1 << 16, dtype=np.uint32).astype(np.uint16)
    f = h.view(np.float16).astype(np.float32)
    enc, back = _kernel.f16_round_trip(f)
    finite = np.isfinite(f)
    np.testing.assert_array_equal(enc[finite], h[finite])
    np.testing.assert_array_equal(back[finite], f[finite])


def test_rounding_matches_numpy_on_random_and_edge_values():
    rng = np.random.default_rng(0)
    vals = np.concatenate([
        rng.standard_normal(200_000).astype(np.float32),
        (rng.standard_normal(200_000) * 1e-5).astype(np.float32),  # subnormal halves
        (rng.standard_normal(50_000) * 6e4).astype(np.float32),    # near overflow
        np.array([0.0, -0.0, 65504.0, 65520.0, 1e-8, 5.96e-8, 2.98e-8, 6.1e-5], np.float32),
    ])
    # Exact ties between two halves (round half to even).
    h = np.arange(0, 0x7bff, 7, dtype=np.uint16)
    lo = h.view(np.float16).astype(np.float32)
    hi = (h + 1).view(np.float16).astype(np.float32)
    vals = np.concatenate([vals, (lo + (hi - lo) / 2).astype(np.float32)])
    enc, _ = _kernel.f16_round_trip(vals)
    with np.errstate(over="ignore"):  # values past 65504 become Inf in both
        want = vals.astype(np.float16).view(np.uint16)
    np.testing.assert_array_equal(enc, want)
