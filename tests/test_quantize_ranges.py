"""compiler/quantize/ranges: every method's range holds zero and lies within [min, max];
percentile and entropy clip a rare outlier that minmax keeps, and mse's range has the least
expected error on the histogram; quantize → dequantize errs by at most half a step
inside the range; weights are symmetric per channel."""

from __future__ import annotations

import numpy as np
import pytest

from edgec.compiler.quantize.ranges import (
    METHODS,
    QRANGE,
    Histogram,
    _mse,
    fake_quant,
    pick_range,
    qparams,
    quantize_weight,
    weight_scales,
)


def _hist(x: np.ndarray) -> Histogram:
    h = Histogram()
    h.see_range(x)
    h.see(x)
    return h


@pytest.fixture(scope="module")
def outlier():
    """Post-ReLU-like values: half-normal, plus one outlier 40x the rest's scale."""
    x = np.abs(np.random.default_rng(0).standard_normal(200_000)).astype(np.float32)
    x[0] = 40 * x.max()
    return x


@pytest.mark.parametrize("method", METHODS)
def test_range_holds_zero_and_data(outlier, method):
    h = _hist(outlier)
    lo, hi = pick_range(h, method, "uint8")
    assert lo <= 0 <= hi
    assert h.lo <= lo and hi <= h.hi
    if method in ("percentile", "entropy"):  # the outlier is clipped (mse weighs its error)
        assert hi < h.hi / 4, (method, hi, h.hi)


def test_mse_has_least_error(outlier):
    h = _hist(outlier)
    errors = {m: _mse(h, pick_range(h, m, "uint8")[1] / h.hi, "uint8") for m in METHODS}
    assert errors["mse"] <= min(errors.values()) * (1 + 1e-9)


@pytest.mark.parametrize("dtype", ["uint8", "int8"])
def test_qparams_round_trip(dtype):
    rng = np.random.default_rng(1)
    x = rng.uniform(-1.3, 4.1, 10_000).astype(np.float32)
    scale, zero = qparams(float(x.min()), float(x.max()), dtype)
    qmin, qmax = QRANGE[dtype]
    assert qmin <= zero <= qmax
    assert fake_quant(np.float32(0), scale, zero, dtype) == 0  # zero is exact
    assert np.abs(fake_quant(x, scale, zero, dtype) - x).max() <= scale / 2 + 1e-6


def test_weights_symmetric_per_channel():
    w = np.random.default_rng(2).standard_normal((6, 4, 3, 3)).astype(np.float32)
    w *= np.arange(1, 7, dtype=np.float32).reshape(-1, 1, 1, 1)
    w[2] = 0
    s = weight_scales(w, 0)
    q = quantize_weight(w, s, 0)
    assert q.dtype == np.int8 and np.abs(q).max() == 127 and not q[2].any()
    err = np.abs(q * s.reshape(-1, 1, 1, 1) - w).reshape(6, -1).max(1)
    assert np.all(err <= s / 2 + 1e-7)
