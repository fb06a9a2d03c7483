"""Activation ranges from calibration data, and the int8 parameters a range gives.

Each quantized tensor's values over the calibration samples are kept as a histogram of
`BINS` bins over [min, max] (`Histogram`, two runs: the first finds min and max). A method
picks the range [lo, hi] (0 always inside it, so zero is exact):

  minmax      [min, max]
  percentile  the PERCENTILE-th quantiles from both ends (outliers clipped)
  mse         [a·min, a·max], a on a grid, minimising the histogram's expected squared error
              after quantize → dequantize (rounding inside the range, clipping outside)
  entropy     [a·min, a·max] minimising KL(P || Q), P the histogram with the clipped tails
              folded into its edge bins, Q the same mass spread evenly over the nonzero bins
              of each of the 256 quantization levels (the TensorRT calibration, two-sided)

A range gives an asymmetric per-tensor scale and zero point, s = (hi - lo) / (qmax - qmin) and
z = qmin - round(lo / s), for uint8 [0, 255] or int8 [-128, 127] (`qparams`); weights are
symmetric per output channel over [-127, 127] (`weight_scales`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

BINS = 2048
PERCENTILE = 99.99
GRID = np.geomspace(0.05, 1.0, 60)  # the shares of [min, max] mse and entropy try
LEVELS = 256
METHODS = ("minmax", "percentile", "entropy", "mse")
QRANGE = {"uint8": (0, 255), "int8": (-128, 127)}


@dataclass
class Histogram:
    lo: float = np.inf
    hi: float = -np.inf
    counts: np.ndarray = field(default_factory=lambda: np.zeros(BINS, np.float64))

    def see_range(self, x: np.ndarray) -> None:
        self.lo = min(self.lo, float(x.min()), 0.0)
        self.hi = max(self.hi, float(x.max()), 0.0)

    def see(self, x: np.ndarray) -> None:
        if self.hi > self.lo:
            self.counts += np.histogram(x, BINS, (self.lo, self.hi))[0]

    @property
    def centers(self) -> np.ndarray:
        edges = np.linspace(self.lo, self.hi, BINS + 1)
        return (edges[:-1] + edges[1:]) / 2


def qparams(lo: float, hi: float, dtype: str) -> tuple[float, int]:
    """Scale and zero point mapping [lo, hi] (0 inside) onto `dtype`'s integers."""
    qmin, qmax = QRANGE[dtype]
    lo, hi = min(lo, 0.0), max(hi, 0.0)
    scale = (hi - lo) / (qmax - qmin)
    if scale <= 0 or not np.isfinite(scale):
        return 1.0, qmin if dtype == "uint8" else 0
    return float(scale), int(np.clip(qmin - round(lo / scale), qmin, qmax))


def fake_quant(x: np.ndarray, scale: float, zero: int, dtype: str) -> np.ndarray:
    """x quantized to `dtype` and back, as QuantizeLinear then DequantizeLinear compute it."""
    qmin, qmax = QRANGE[dtype]
    return (np.clip(np.round(x / scale) + zero, qmin, qmax) - zero) * scale


def _mse(h: Histogram, a: float, dtype: str) -> float:
    s, z = qparams(a * h.lo, a * h.hi, dtype)
    x = h.centers
    return float(np.sum(h.counts * np.square(fake_quant(x, s, z, dtype) - x)))


def _kl(h: Histogram, a: float) -> float:
    """KL(P || Q) of the histogram clipped to [a·lo, a·hi] against its 256-level form."""
    x, c = h.centers, h.counts
    inside = (x >= a * h.lo) & (x <= a * h.hi)
    idx = np.flatnonzero(inside)
    if len(idx) < LEVELS:
        return np.inf
    p = c[idx].copy()
    p[0] += c[:idx[0]].sum()
    p[-1] += c[idx[-1] + 1:].sum()
    level = (np.arange(len(p)) * LEVELS) // len(p)
    mass = np.bincount(level, p, LEVELS)
    nonzero = np.bincount(level, (p > 0).astype(np.float64), LEVELS)
    q = np.where(p > 0, mass[level] / np.maximum(nonzero[level], 1), 0.0)
    p, q = p / p.sum(), q / max(q.sum(), 1e-30)
    keep = p > 0
    return float(np.sum(p[keep] * np.log(p[keep] / np.maximum(q[keep], 1e-30))))


def _quantile(h: Histogram, share: float) -> float:
    cdf = np.cumsum(h.counts) / max(h.counts.sum(), 1.0)
    return float(h.centers[min(int(np.searchsorted(cdf, share)), BINS - 1)])


def pick_range(h: Histogram, method: str, dtype: str) -> tuple[float, float]:
    """[lo, hi] of the tensor by `method` (one of METHODS)."""
    if method == "minmax" or h.hi <= h.lo or h.counts.sum() == 0:
        return h.lo, h.hi
    if method == "percentile":
        tail = (100.0 - PERCENTILE) / 100.0
        return min(_quantile(h, tail), 0.0), max(_quantile(h, 1.0 - tail), 0.0)
    cost = (lambda a: _mse(h, a, dtype)) if method == "mse" else (lambda a: _kl(h, a))
    best = min(GRID, key=cost)
    return float(best * h.lo), float(best * h.hi)


def weight_scales(w: np.ndarray, axis: int = 0) -> np.ndarray:
    """Symmetric int8 scale per slice along `axis`: max|w| / 127 (1 for an all-zero slice)."""
    other = tuple(i for i in range(w.ndim) if i != axis)
    peak = np.abs(w).max(axis=other) if other else np.abs(w)
    return np.where(peak > 0, peak / 127.0, 1.0).astype(np.float32)


def quantize_weight(w: np.ndarray, scales: np.ndarray, axis: int = 0) -> np.ndarray:
    shape = [1] * w.ndim
    shape[axis] = -1
    return np.clip(np.round(w / scales.reshape(shape)), -127, 127).astype(np.int8)
