"""lift_1d: 1-D convolutions and pools as 2-D ones over a height of 1, the squeezes between them
cancelled.

Pattern: a Conv or ConvTranspose with constant 3-D weights (W[O, C/g, k], W[C, O/g, k]: a 1-D
conv of a time series, audio or text model), or a MaxPool/AveragePool with a 1-D kernel,
explicit pads (no auto_pad).

Math: a 1-D op over x[N, C, L] is the 2-D op over x[N, C, 1, L] with kernel [1, k], strides
[1, s], dilations [1, d], pads [0, p0, 0, p1] (a transpose's output_padding [0, a], output_shape
[1, L']) and weights W[.., .., 1, k]: the height axis has
one row and one tap, so every output reads the same inputs with the same weights. Each op
becomes Unsqueeze(axis 2) -> the 2-D op -> Squeeze(axis 2). Then each Squeeze sinks below the
ops that treat every element or every channel alike (activations, BatchNormalization, a scalar
Add/Mul, global pools; Squeeze(op(x)) = op(Squeeze(x)) for these), and a Squeeze meeting an
Unsqueeze of the same axis cancels: a conv -> ReLU -> pool -> conv chain stays 4-D from its
first Unsqueeze to its last Squeeze. A Flatten with axis 0, 1 or 2 reads the 4-D tensor
directly (the same elements in the same order; a negative axis counts from the end, which the
added axis moves, so that Flatten keeps its Squeeze). Exact: no value changes.

Why: the `cpu` pipeline's channels-last layout, register tiles and padded-input copies are
written for 2-D convs; a 1-D conv kept its NCW form with a per-lane padding test in its
vectorized loop (a 6 -> 32 channel, 7-tap conv issued 3.4 instructions per multiply-add on a
Cortex-A72, 1.7x onnxruntime's count for the whole model).

Declines (reason in the report): conv weights not a constant, auto_pad, a MaxPool with an
indices output.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import helper

from edgec.compiler.passes.graph import GraphIndex, attr, replace_node, set_const, tidy, unique_name
from edgec.compiler.passes.report import PassReport

POOLS = {"MaxPool", "AveragePool"}
CONVS = {"Conv", "ConvTranspose"}  # weights [O, C/g, k] and [C, O/g, k]: a tap axis added
# ops through which a Squeeze of axis 2 sinks: elementwise on one tensor, or per channel
SINKS = {"BatchNormalization", "Relu", "LeakyRelu", "Sigmoid", "Tanh", "HardSigmoid",
         "HardSwish", "Clip", "Elu", "Selu", "Softplus", "Mish", "Gelu", "Neg", "Abs", "Exp",
         "Sqrt", "Erf", "Identity", "Dropout", "GlobalAveragePool", "GlobalMaxPool"}
SCALAR_SINKS = {"Add", "Sub", "Mul", "Div", "Pow"}  # with a scalar constant as the other input
AXIS = 2  # the height axis the lifted ops add


def _decline_reason(node: onnx.NodeProto, index: GraphIndex) -> str:
    if attr(node, "auto_pad", b"NOTSET") not in (b"NOTSET", "NOTSET"):
        return "auto_pad"
    if node.op_type in CONVS and index.const(node.input[1]) is None:
        return "weights are not a constant"
    if node.op_type == "MaxPool" and len(node.output) > 1 and node.output[1]:
        return "indices output"
    return ""


def _is_1d(node: onnx.NodeProto, index: GraphIndex) -> bool:
    """A conv or pool with one spatial axis: by its weights' rank where they are a constant
    (read from the initializer's dims, not converted), else by its kernel_shape."""
    weights = index.inits.get(node.input[1]) if node.op_type in CONVS else None
    if weights is not None and node.input[1] not in index.inputs:
        return len(weights.dims) == 3
    return len(attr(node, "kernel_shape", [])) == 1


def _axis_node(op: str, graph: onnx.GraphProto, opset: int, x: str, y: str,
               name: str) -> onnx.NodeProto:
    """Unsqueeze or Squeeze of AXIS in the form the model's opset reads (axes an input from 13)."""
    if opset >= 13:
        axes = set_const(graph, unique_name(graph, f"{name}_axes"), np.array([AXIS], np.int64))
        return helper.make_node(op, [x, axes], [y], name=name)
    return helper.make_node(op, [x], [y], name=name, axes=[AXIS])


def _lifted_attrs(node: onnx.NodeProto) -> dict:
    attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
    k = attrs.get("kernel_shape")
    if k is not None:
        attrs["kernel_shape"] = [1, *k]
    for key in ("strides", "dilations", "output_shape"):
        if key in attrs:
            attrs[key] = [1, *attrs[key]]
    if "output_padding" in attrs:
        attrs["output_padding"] = [0, *attrs["output_padding"]]
    if "pads" in attrs:
        attrs["pads"] = [0, attrs["pads"][0], 0, attrs["pads"][1]]
    attrs.pop("auto_pad", None)
    return attrs


def _lift(graph: onnx.GraphProto, node: onnx.NodeProto, index: GraphIndex, opset: int) -> None:
    base = node.name or node.output[0]
    x4 = unique_name(graph, f"{base}_in2d")
    y4 = unique_name(graph, f"{base}_out2d")
    inputs = [x4, *node.input[1:]]
    if node.op_type in CONVS:
        w = index.const(node.input[1])
        inputs[1] = set_const(graph, unique_name(graph, f"{base}_w2d"), w[:, :, None, :])
    new = [_axis_node("Unsqueeze", graph, opset, node.input[0], x4, f"{base}_lift"),
           helper.make_node(node.op_type, inputs, [y4], name=f"{base}_2d",
                            **_lifted_attrs(node)),
           _axis_node("Squeeze", graph, opset, y4, node.output[0], f"{base}_drop")]
    replace_node(graph, node, new)


def _on_axis(node: onnx.NodeProto, index: GraphIndex) -> bool:
    """A Squeeze or Unsqueeze of AXIS alone (axes an attribute before opset 13, an input from
    it)."""
    axes = attr(node, "axes") if len(node.input) < 2 else index.const(node.input[1])
    return axes is not None and list(np.atleast_1d(axes)) == [AXIS]


def _squeezed(index: GraphIndex, name: str) -> onnx.NodeProto | None:
    """The Squeeze of AXIS that produces `name`, if one does."""
    node = index.producer.get(name)
    return node if node is not None and node.op_type == "Squeeze" and _on_axis(node, index) \
        else None


def _scalar_partner(node: onnx.NodeProto, index: GraphIndex) -> bool:
    if node.op_type not in SCALAR_SINKS or len(node.input) != 2:
        return False
    other = index.const(node.input[1])
    return other is not None and other.size == 1 and other.ndim <= 1


def _sink_one(graph: onnx.GraphProto, index: GraphIndex) -> bool:
    """One step: a Squeeze cancelled against an Unsqueeze, read past by a Flatten, or moved
    below the op it feeds. False when no step applies."""
    for node in graph.node:
        sq = _squeezed(index, node.input[0]) if node.input else None
        if sq is None or sq.input[0] in index.subgraph_reads:
            continue
        if node.op_type == "Unsqueeze" and _on_axis(node, index):
            out = node.output[0]
            if out in index.outputs:
                continue
            for user in index.consumers.get(out, []):
                user.input[:] = [sq.input[0] if i == out else i for i in user.input]
            graph.node.remove(node)
            return True
        if node.op_type == "Flatten" and 0 <= attr(node, "axis", 1) <= AXIS:
            node.input[0] = sq.input[0]
            return True
        single = (index.uses(sq.output[0]) == 1 and len(node.output) == 1
                  and node.domain in ("", "ai.onnx"))
        if single and (node.op_type in SINKS or _scalar_partner(node, index)):
            _swap(graph, sq, node)
            return True
    return False


def _swap(graph: onnx.GraphProto, sq: onnx.NodeProto, op: onnx.NodeProto) -> None:
    """Squeeze -> op becomes op -> Squeeze; the op's output keeps its name after the Squeeze."""
    out = op.output[0]
    lifted = unique_name(graph, f"{out}_2d")
    op.input[0], op.output[0] = sq.input[0], lifted
    sq.input[0], sq.output[0] = lifted, out
    graph.node.remove(sq)
    graph.node.insert(list(graph.node).index(op) + 1, sq)


def lift_1d(model: onnx.ModelProto) -> tuple[onnx.ModelProto, PassReport]:
    """Every 1-D Conv, MaxPool and AveragePool as its 2-D form, squeezes sunk and cancelled
    (module docstring)."""
    out = onnx.ModelProto()
    out.CopyFrom(model)
    graph = out.graph
    report = PassReport("lift_1d")
    opset = next((o.version for o in out.opset_import if o.domain in ("", "ai.onnx")), 13)
    index = GraphIndex(graph)  # rebuilt only after a lift: a 2-D model costs one
    for node in [n for n in graph.node if n.op_type in POOLS | CONVS]:
        if not _is_1d(node, index):
            continue
        why = _decline_reason(node, index)
        if why:
            report.decline(node.name or node.output[0], why)
            continue
        _lift(graph, node, index, opset)
        report.count(f"{node.op_type} 1-D")
        index = GraphIndex(graph)
    if report.changed:
        while _sink_one(graph, GraphIndex(graph)):
            pass
        tidy(graph)
    return out, report
