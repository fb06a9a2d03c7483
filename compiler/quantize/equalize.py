"""Cross-layer equalization: balance the weight ranges of a conv and the conv that reads it.

Pattern: Conv A (constant W1, b1) → [Relu | Clip(0, M) | Min(constant)]* → Conv B (constant
W2; dense, or depthwise with one output per channel), A's output read by nothing else. For
each channel k between them, with r1_k = max |W1[k]| (A's output channel k) and
r2_k = max |W2[:, k]| (the weights B applies to channel k), scale by s_k = sqrt(r1_k / r2_k):

    W1[k] /= s_k,   b1[k] /= s_k,   W2[:, k] *= s_k

Exact in real arithmetic, because relu(y / s) = relu(y) / s for s > 0 and B is linear in
channel k; a bound moves with its channel: min(relu(y / s), M / s) = clip(y, 0, M) / s, so a
Clip(0, M) (ReLU6) between them becomes Relu then Min with the per-channel bound M / s_k, and
such a Min's bound is divided again by later scales. That bounded mode is asked for
(`bounded`): edgec's int8 kernels apply the Min in their epilogue, but onnxruntime's QDQ
fusion does not take a conv followed by a Min, so it runs those convs in fp32 (MobileNetV2:
5.6 ms instead of 0.9). Afterwards both ranges are
sqrt(r1_k · r2_k), so per-tensor and per-channel int8 lose less on the channel with the
smaller range (Nagel et al. 2019, "Data-free quantization"). A pair is declined where another
activation sits between them (sigmoid, hard-swish: not scale-invariant), where B is grouped,
or where a scale is already 1 (within EPS: equalized).
Equalizing one pair moves the ranges of the pairs beside it, so the rules are applied in
sweeps until none rewrites (at most SWEEPS).
"""

from __future__ import annotations

import numpy as np
import onnx

from ..passes.graph import GraphIndex, attr, set_const, unique_name
from ..passes.report import PassReport
from ..passes.rules import Rule, apply_rules

EPS = 1e-3
VARIANT = ("Clip", "Sigmoid", "HardSwish", "HardSigmoid", "LeakyRelu", "Tanh")  # f(y/s) != f(y)/s
SWEEPS = 8


def _bound(node: onnx.NodeProto, index: GraphIndex, bounded: bool) -> str | None:
    """Why `node`, between the two convs, is not positively homogeneous, else None: Relu;
    with `bounded`, Clip(0, M) (kept exact as Relu then a per-channel Min, scaled with the
    channels) and Min with a constant bound (such a Min)."""
    if node.op_type == "Relu":
        return None
    if not bounded and node.op_type in ("Clip", "Min"):
        return f"{node.op_type} (equalizing through a bound: the bounded mode)"
    if node.op_type == "Clip":
        lo = index.const(node.input[1]) if len(node.input) > 1 and node.input[1] else None
        hi = index.const(node.input[2]) if len(node.input) > 2 and node.input[2] else None
        if lo is None or hi is None or lo.size != 1 or hi.size != 1 or float(lo) != 0:
            return "Clip other than Clip(0, constant)"
        return None
    if node.op_type == "Min" and len(node.input) == 2 and index.const(node.input[1]) is not None:
        return None
    return f"{node.op_type}, which is not scale-invariant" if node.op_type in VARIANT else \
        node.op_type


def _reader(node: onnx.NodeProto, index: GraphIndex, bounded: bool
            ) -> tuple[onnx.NodeProto | None, list[onnx.NodeProto], str]:
    """The conv that reads A's output and the activations between them, or None and why."""
    out, between = node.output[0], []
    while True:
        readers = index.consumers.get(out, [])
        if out in index.outputs:
            return None, between, "its output is a graph output"
        if index.uses(out) != 1 or not readers:
            return None, between, "its output has other readers"
        nxt = readers[0]
        if nxt.op_type == "Conv" and nxt.input[0] == out:
            return nxt, between, ""
        why = _bound(nxt, index, bounded)
        if why is not None or nxt.input[0] != out:
            return None, between, f"read by {why or nxt.op_type}"
        between.append(nxt)
        out = nxt.output[0]


def _scale_bounds(g: onnx.GraphProto, between: list[onnx.NodeProto], index: GraphIndex,
                  s: np.ndarray) -> None:
    """Each bound between the convs divided by the channel scales s: Clip(0, M) becomes Relu
    then Min(M / s); a Min's bound B becomes B / s."""
    per_channel = (1, -1, 1, 1)
    for node in between:
        if node.op_type == "Clip":
            hi = np.float32(index.const(node.input[2]).reshape(()))
            bound = unique_name(g, f"{node.name or node.output[0]}.bound")
            set_const(g, bound, (hi / s).astype(np.float32).reshape(per_channel))
            clipped = node.output[0]
            relu_out = unique_name(g, f"{clipped}.relu")
            node.op_type, node.output[0] = "Relu", relu_out
            del node.input[1:]
            g.node.insert(list(g.node).index(node) + 1, onnx.helper.make_node(
                "Min", [relu_out, bound], [clipped], name=f"{node.name}.min"))
        elif node.op_type == "Min":
            bound = np.broadcast_to(index.const(node.input[1]),
                                    (1, len(s), 1, 1)).astype(np.float32)
            name = unique_name(g, f"{node.input[1]}.scaled")
            set_const(g, name, bound / s.reshape(per_channel))
            node.input[1] = name


def _scales(node: onnx.NodeProto, index: GraphIndex, bounded: bool
            ) -> tuple[np.ndarray | None, str]:
    for i in node.input[1:3]:
        if i and index.const(i) is None:
            return None, "weights or bias not constant"
    reader, _, why = _reader(node, index, bounded)
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


def _rewrite(node: onnx.NodeProto, index: GraphIndex, bounded: bool) -> None:
    s, _ = _scales(node, index, bounded)
    reader, between, _ = _reader(node, index, bounded)
    g = index.graph
    _scale_bounds(g, between, index, s)
    w1 = index.const(node.input[1])
    set_const(g, node.input[1], w1 / s.reshape(-1, 1, 1, 1))
    if len(node.input) > 2 and node.input[2]:
        set_const(g, node.input[2], index.const(node.input[2]) / s)
    w2 = index.const(reader.input[1])
    shape = (1, -1, 1, 1) if attr(reader, "group", 1) == 1 else (-1, 1, 1, 1)
    set_const(g, reader.input[1], w2 * s.reshape(shape))


def _rule(bounded: bool) -> Rule:
    return Rule("conv pairs equalized", match=lambda n, _: n.op_type == "Conv",
                check=lambda n, i: _scales(n, i, bounded)[1] or None,
                rewrite=lambda n, i: _rewrite(n, i, bounded))


def equalize(model: onnx.ModelProto, bounded: bool = False
             ) -> tuple[onnx.ModelProto, PassReport]:
    """Equalize every conv pair of `model` (a copy), in sweeps, through Relu (and with
    `bounded` through Clip(0, M) too); the report of all sweeps (the reasons are those of
    the last)."""
    out = onnx.ModelProto.FromString(model.SerializeToString())
    total = PassReport("equalize")
    _shared_weights_unique(out.graph)
    for _ in range(SWEEPS):
        report = PassReport("equalize")
        apply_rules(out.graph, [_rule(bounded)], report, lambda n: n.op_type == "Conv")
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
