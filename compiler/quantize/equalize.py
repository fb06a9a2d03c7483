"""Cross-layer equalization: balance the weight ranges of a conv and the conv that reads it.

Pattern: Conv A (constant W1, b1) → [Relu] → Conv B (constant W2; dense, or depthwise with
one output per channel), A's output read by nothing else. For each channel k between them,
with r1_k = max |W1[k]| (A's output channel k) and r2_k = max |W2[:, k]| (the weights B
applies to channel k), scale by s_k = sqrt(r1_k / r2_k):

    W1[k] /= s_k,   b1[k] /= s_k,   W2[:, k] *= s_k

Exact in real arithmetic, because relu(y / s) = relu(y) / s for s > 0 and B is linear in
channel k; afterwards both ranges are sqrt(r1_k · r2_k), so per-tensor and per-channel int8
lose less on the channel with the smaller range (Nagel et al. 2019, "Data-free quantization").
A pair is declined where an activation other than Relu sits between them (Clip(0, 6) is not
scale-invariant), where B is grouped, or where a scale is already 1 (within EPS: equalized).
Equalizing one pair moves the ranges of the pairs beside it, so the rules are applied in
sweeps until none rewrites (at most SWEEPS).
"""

from __future__ import annotations

import numpy as np
import onnx

from ..passes.graph import GraphIndex, attr, set_const
from ..passes.report import PassReport
from ..passes.rules import Rule, apply_rules

EPS = 1e-3
VARIANT = ("Clip", "Sigmoid", "HardSwish", "HardSigmoid", "LeakyRelu", "Tanh")  # f(y/s) != f(y)/s
SWEEPS = 8


def _reader(node: onnx.NodeProto, index: GraphIndex) -> tuple[onnx.NodeProto | None, str]:
    """The conv that reads A's output (through one Relu), or None and why not."""
    out = node.output[0]
    readers = index.consumers.get(out, [])
    if index.uses(out) == 1 and readers and readers[0].op_type == "Relu":
        out = readers[0].output[0]
        readers = index.consumers.get(out, [])
    if out in index.outputs:
        return None, "its output is a graph output"
    if index.uses(out) != 1 or not readers:
        return None, "its output has other readers"
    if readers[0].op_type != "Conv" or readers[0].input[0] != out:
        op = readers[0].op_type
        return None, f"read by {op}" + (", which is not scale-invariant" if op in VARIANT else "")
    return readers[0], ""


def _scales(node: onnx.NodeProto, index: GraphIndex) -> tuple[np.ndarray | None, str]:
    for i in node.input[1:3]:
        if i and index.const(i) is None:
            return None, "weights or bias not constant"
    reader, why = _reader(node, index)
    if reader is None:
        return None, why
    w2 = index.const(reader.input[1])
    if w2 is None:
        return None, "the next conv's weights are not constant"
    w1 = index.const(node.input[1])
    if w1.ndim != 4 or w2.ndim != 4:
        return None, "not a 2-D conv"
    groups, channels = attr(reader, "group", 1), w1.shape[0]
    if groups == 1:
        r2 = np.abs(w2).max(axis=(0, 2, 3))
    elif groups == channels and w2.shape[0] == channels:
        r2 = np.abs(w2).reshape(channels, -1).max(axis=1)
    else:
        return None, "the next conv is grouped"
    r1 = np.abs(w1).reshape(channels, -1).max(axis=1)
    s = np.where((r1 > 0) & (r2 > 0), np.sqrt(r1 / np.maximum(r2, 1e-30)), 1.0)
    if np.all(np.abs(s - 1) < EPS):
        return None, "already equalized"
    return s.astype(np.float32), ""


def _rewrite(node: onnx.NodeProto, index: GraphIndex) -> None:
    s, _ = _scales(node, index)
    reader, _ = _reader(node, index)
    g = index.graph
    w1 = index.const(node.input[1])
    set_const(g, node.input[1], w1 / s.reshape(-1, 1, 1, 1))
    if len(node.input) > 2 and node.input[2]:
        set_const(g, node.input[2], index.const(node.input[2]) / s)
    w2 = index.const(reader.input[1])
    shape = (1, -1, 1, 1) if attr(reader, "group", 1) == 1 else (-1, 1, 1, 1)
    set_const(g, reader.input[1], w2 * s.reshape(shape))


RULE = Rule("conv pairs equalized", match=lambda n, _: n.op_type == "Conv",
            check=lambda n, i: _scales(n, i)[1] or None, rewrite=_rewrite)


def equalize(model: onnx.ModelProto) -> tuple[onnx.ModelProto, PassReport]:
    """Equalize every conv pair of `model` (a copy), in sweeps; the report of all sweeps (the
    reasons are those of the last)."""
    out = onnx.ModelProto.FromString(model.SerializeToString())
    total = PassReport("equalize")
    _shared_weights_unique(out.graph)
    for _ in range(SWEEPS):
        report = PassReport("equalize")
        apply_rules(out.graph, [RULE], report, lambda n: n.op_type == "Conv")
        for what, n in report.rewrites.items():
            total.count(what, n)
        total.declined = [d for d in report.declined if "already equalized" not in d]
        if not report.changed:
            break
    return out, total


def _shared_weights_unique(graph: onnx.GraphProto) -> None:
    """Give each conv its own weight initializer where several read one (scaling one conv's
    weights must not scale another's)."""
    seen: set[str] = set()
    inits = {t.name: t for t in graph.initializer}
    for node in graph.node:
        if node.op_type != "Conv":
            continue
        for k in (1, 2):
            name = node.input[k] if len(node.input) > k else ""
            if name in seen and name in inits:
                copy = onnx.TensorProto()
                copy.CopyFrom(inits[name])
                copy.name = f"{name}.{node.name}"
                graph.initializer.append(copy)
                node.input[k] = copy.name
            elif name:
                seen.add(name)
