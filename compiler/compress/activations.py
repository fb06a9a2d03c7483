"""A conv layer's inputs and outputs on calibration data, as the moments the low-rank fit reads.

`LayerMoments` of a conv holds, over sampled output pixels p of all calibration samples,
M = E[p~ p~^T] and X = E[p~ y^T]: p~ is the input patch the conv reads for that pixel (C*kH*kW
values, channel-major as ONNX weights are, then a 1), y the original model's conv output there
(N values, bias included). The patches come from the model being compressed, as compressed so
far (`current`); the outputs from the original (`original`): the fit then makes the compressed
layer, fed by the compressed prefix, reproduce the original layer (lowrank.refit).

Both models run in onnxruntime with the conv's input, or output, added as a graph output.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import onnx
from numpy.lib.stride_tricks import sliding_window_view

from edgec.compiler.passes.graph import attr
from edgec.compiler.passes.lowrank import whitening
from edgec.harness.ort import ort_session

MAX_ROWS = 24_000  # output pixels sampled per layer, over all calibration samples, at most
ROWS_PER_DIM = 8  # and at most this many per patch value
BATCH = 64  # samples per onnxruntime call where the model takes a free batch dim


@dataclass
class LayerMoments:
    moment: np.ndarray  # [d + 1, d + 1], d = C*kH*kW
    cross: np.ndarray  # [d + 1, N]
    rows: int
    _roots: dict[int, list] = field(default_factory=dict)

    def roots(self, groups: int) -> list[tuple[np.ndarray, np.ndarray]]:
        """lowrank.whitening of the patches' moment in `groups` groups, computed once."""
        if groups not in self._roots:
            self._roots[groups] = whitening(self.moment[:-1, :-1], groups, self.rows)
        return self._roots[groups]


def expose(model: onnx.ModelProto, names: list[str]) -> bytes:
    """`model` serialized with the tensors `names` as extra graph outputs (fp32)."""
    out = onnx.ModelProto.FromString(model.SerializeToString())
    have = {o.name for o in out.graph.output}
    for name in names:
        if name not in have:
            out.graph.output.append(onnx.helper.make_tensor_value_info(
                name, onnx.TensorProto.FLOAT, None))
    return out.SerializeToString()


def _batched(model: onnx.ModelProto) -> onnx.ModelProto:
    """`model` with a free batch dim on its inputs and outputs (intermediate shapes dropped)."""
    out = onnx.ModelProto.FromString(model.SerializeToString())
    weights = {t.name for t in out.graph.initializer}
    for vi in [*[i for i in out.graph.input if i.name not in weights], *out.graph.output]:
        dims = vi.type.tensor_type.shape.dim
        if len(dims):
            dims[0].dim_param = "batch"
    del out.graph.value_info[:]
    return out


def tensors(model: onnx.ModelProto, names: list[str] | None,
            feeds: list[dict[str, np.ndarray]], batched: bool | None = None
            ) -> Iterator[list[np.ndarray]]:
    """The values of `names` (any tensors of the model; None: its outputs) for each feed, in
    order. Feeds run BATCH at a time where the model, given a free batch dim, gives the same
    outputs on the first two (a Reshape to a fixed batch of 1 does not); else one by one.
    `batched` True or False skips that check (a caller that checked a model of the same
    structure)."""
    want = names or [o.name for o in model.graph.output]
    if batched:
        many = ort_session(expose(_batched(model), want), threads=0, optimize=True)
    else:
        one = ort_session(expose(model, want), threads=0, optimize=True)
        many = None if batched is False else _batch_session(model, want, one, feeds)
    if many is None:
        for feed in feeds:
            yield one.run(want, feed)
        return
    for start in range(0, len(feeds), BATCH):
        chunk = feeds[start:start + BATCH]
        sizes = [len(next(iter(f.values()))) for f in chunk]
        outs = many.run(want, {k: np.concatenate([f[k] for f in chunk]) for k in chunk[0]})
        bounds = np.cumsum([0, *sizes])
        for i in range(len(chunk)):
            yield [o[bounds[i]:bounds[i + 1]] for o in outs]


def batchable(model: onnx.ModelProto, feeds: list[dict[str, np.ndarray]]) -> bool:
    """Whether `model` with a free batch dim reproduces its outputs on the first two feeds."""
    want = [o.name for o in model.graph.output]
    one = ort_session(expose(model, want), threads=0, optimize=True)
    return _batch_session(model, want, one, feeds) is not None


def _batch_session(model: onnx.ModelProto, want: list[str], one: Any,
                   feeds: list[dict[str, np.ndarray]]) -> Any:
    """A session of the batched model where it reproduces `one` on the first two feeds."""
    if len(feeds) < 2:
        return None
    try:
        many = ort_session(expose(_batched(model), want), threads=0, optimize=True)
        got = many.run(want, {k: np.concatenate([f[k] for f in feeds[:2]]) for k in feeds[0]})
    except Exception:  # noqa: BLE001 - onnxruntime's errors have no common type
        return None
    ref = [np.concatenate(z) for z in zip(one.run(want, feeds[0]), one.run(want, feeds[1]))]
    same = all(g.shape == r.shape and np.allclose(g, r, rtol=1e-4, atol=1e-5 * max(
        1.0, float(np.abs(r).max()))) for g, r in zip(got, ref))
    return many if same else None


def patches(x: np.ndarray, node: onnx.NodeProto, kernel: tuple[int, int]) -> np.ndarray:
    """im2col: x [B, C, H, W] -> [B*Ho*Wo, C*kH*kW] for conv `node` (explicit pads)."""
    kh, kw = kernel
    t, left, b, r = attr(node, "pads", [0, 0, 0, 0])
    sh, sw = attr(node, "strides", [1, 1])
    dh, dw = attr(node, "dilations", [1, 1])
    xp = np.pad(x, ((0, 0), (0, 0), (t, b), (left, r)))
    win = sliding_window_view(xp, ((kh - 1) * dh + 1, (kw - 1) * dw + 1), axis=(2, 3))
    win = win[:, :, ::sh, ::sw, ::dh, ::dw]  # [B, C, Ho, Wo, kH, kW]
    bsz, c, ho, wo = win.shape[:4]
    return win.transpose(0, 2, 3, 1, 4, 5).reshape(bsz * ho * wo, c * kh * kw)


def fit_reason(node: onnx.NodeProto) -> str | None:
    """Why the moments of conv `node` cannot be collected, else None."""
    if attr(node, "auto_pad", b"NOTSET") not in (b"NOTSET", "NOTSET", b"VALID", "VALID"):
        return "auto_pad SAME: pads not explicit"
    return None


def layer_moments(current: onnx.ModelProto, original: onnx.ModelProto, node: onnx.NodeProto,
                  kernel: tuple[int, int], feeds: list[dict[str, np.ndarray]],
                  seed: int = 0) -> LayerMoments:
    """The moments of conv `node` (its input in `current`, its output in `original`)."""
    xs = tensors(current, [node.input[0]], feeds)
    ys = tensors(original, [node.output[0]], feeds)
    rng = np.random.default_rng(seed)
    ps, ys_ = [], []
    for (x,), (y,) in zip(xs, ys):
        p = patches(x.astype(np.float32), node, kernel)
        yr = y.transpose(0, 2, 3, 1).reshape(-1, y.shape[1])
        keep = max(1, min(MAX_ROWS, ROWS_PER_DIM * (p.shape[1] + 1)) // len(feeds))
        if len(p) > keep:
            pick = rng.choice(len(p), keep, replace=False)
            p, yr = p[pick], yr[pick]
        ps.append(p)
        ys_.append(yr)
    p = np.hstack([np.concatenate(ps), np.ones((sum(len(q) for q in ps), 1), np.float32)])
    y = np.concatenate(ys_).astype(np.float32)
    rows = len(p)
    return LayerMoments((p.T @ p).astype(np.float64) / rows,
                        (p.T @ y).astype(np.float64) / rows, rows)
