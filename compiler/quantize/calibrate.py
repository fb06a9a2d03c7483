"""Calibration: the quantized tensors' value distributions and the layer inputs' channel means.

The fp32 model runs in onnxruntime on the calibration samples with every tensor a layer reads
or writes exposed as an output, twice: the first run finds each tensor's min and max (and the
per-channel means bias correction needs: channel axis 1 for conv inputs, the last axis for
matrix inputs), the second fills a histogram over that range (ranges.Histogram), from which
the --method picks each tensor's range.
"""

from __future__ import annotations

import numpy as np
import onnx

from ..compress.activations import batchable, tensors
from .layers import Layer
from .qdq import TensorQuant
from .ranges import Histogram, pick_range, qparams


def _channel_mean(x: np.ndarray, op: str) -> np.ndarray:
    if op == "Conv":
        return x.mean(axis=tuple(i for i in range(x.ndim) if i != 1), dtype=np.float64)
    return x.reshape(-1, x.shape[-1]).mean(axis=0, dtype=np.float64)


def calibrate(model: onnx.ModelProto, layers: list[Layer], feeds: list[dict[str, np.ndarray]]
              ) -> tuple[dict[str, Histogram], dict[str, np.ndarray]]:
    """Histograms of every tensor the layers quantize, and each layer input's channel means."""
    names = list(dict.fromkeys(t for la in layers for t in la.tensors()))
    ops = {la.act: la.op for la in layers}
    hists = {t: Histogram() for t in names}
    sums: dict[str, np.ndarray] = {}
    batched = batchable(model, feeds)
    for values in tensors(model, names, feeds, batched):
        for t, x in zip(names, values):
            hists[t].see_range(x)
            if t in ops:
                sums[t] = sums.get(t, 0) + _channel_mean(x, ops[t])
    for values in tensors(model, names, feeds, batched):
        for t, x in zip(names, values):
            hists[t].see(x)
    return hists, {t: s / len(feeds) for t, s in sums.items()}


def tensor_quant(hists: dict[str, Histogram], method: str, dtype: str
                 ) -> dict[str, TensorQuant]:
    """Each tensor's scale and zero point from its range by `method`."""
    out = {}
    for t, h in hists.items():
        scale, zero = qparams(*pick_range(h, method, dtype), dtype)
        out[t] = TensorQuant(scale, zero, dtype)
    return out
