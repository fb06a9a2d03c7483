"""pad_channels: give convolutions a channel count the target's vectors divide.

The CPU schedules (cpu/schedules.py) vectorize a channels-last kernel along its output
channels, which needs the vector length to divide them. ShuffleNetV2's 58-channel branches do
not (58 = 2 x 29): they ran scalar at a tenth of the speed of their neighbours. This pass pads
them before import; it is part of the `cpu` pipeline, never of the user's optimized model.

Pattern: a 2-D Conv with constant weights W[C, C_in/g, kh, kw], group 1, and C not a multiple
of `multiple` (the target's vector length), padded to M = ceil(C / multiple) * multiple as long
as the extra work stays under `max_waste`:

    W' = [W; 0] (M rows), b' = [b; 0]   ->   y' = [y; 0]   (the extra channels are exact zeros)

The padded tensor then flows as far as it stays cheap and exact, to each consumer of y:
- an elementwise activation f (Relu, Clip, Sigmoid, ...): f(y') = [f(y); f(0)], still padded;
- a depthwise Conv (group = C, W[C, 1, kh, kw]): padded to group M with zero weights, same;
- a group-1 Conv: its weights get M - C zero input channels, so sum_c W'[o, c] y'[c] equals
  sum_c W[o, c] y[c] whatever the padded channels hold (f(0) need not be 0);
- anything else (Concat, Reshape, Add, a graph output): a Slice back to channels [0, C).
The Slice keeps the original tensor name, so the rest of the graph is untouched; TVM fuses it
into its consumer as an index, so it costs no copy.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import helper

from edgec.compiler.passes.graph import (
    GraphIndex,
    attr,
    set_attr,
    set_const,
    tidy,
    unique_name,
)
from edgec.compiler.passes.report import PassReport

# Elementwise ops whose only tensor input is the activation (the rest constant, e.g. Clip's).
PASS_THROUGH = {"Relu", "Clip", "LeakyRelu", "HardSigmoid", "HardSwish", "Sigmoid", "Tanh",
                "Elu", "Selu", "Softplus", "Identity"}


def conv_weights(node: onnx.NodeProto, index: GraphIndex) -> tuple | None:
    """(W, b or None) of a 2-D Conv whose weights (and bias, if any) are constants."""
    if node.op_type != "Conv" or len(node.input) < 2:
        return None
    w = index.const(node.input[1])
    if w is None or w.ndim != 4:
        return None
    b = None
    if len(node.input) > 2 and node.input[2]:
        b = index.const(node.input[2])
        if b is None:
            return None
    return w, b


def _pad(a: np.ndarray, axis: int, size: int) -> np.ndarray:
    widths = [(0, 0)] * a.ndim
    widths[axis] = (0, size - a.shape[axis])
    return np.pad(a, widths)


def write_input(graph: onnx.GraphProto, node: onnx.NodeProto, pos: int, value: np.ndarray,
                suffix: str = "padded") -> None:
    """Point input `pos` of `node` at a new initializer holding `value`."""
    # A new initializer per rewrite: the old one may be shared with a node left as it is.
    name = unique_name(graph, f"{node.input[pos]}_{suffix}")
    set_const(graph, name, value)
    node.input[pos] = name


def _pad_filters(graph, node, w: np.ndarray, b: np.ndarray | None, size: int) -> None:
    """Zero output filters (and bias) up to `size`."""
    write_input(graph, node, 1, _pad(w, 0, size))
    if b is not None:
        write_input(graph, node, 2, _pad(b, 0, size))


def rename_output(graph: onnx.GraphProto, node: onnx.NodeProto,
                  suffix: str = "padded") -> tuple[str, str]:
    """Give `node`'s output a new name; returns (new, old)."""
    old = node.output[0]
    node.output[0] = unique_name(graph, f"{old}_{suffix}")
    return node.output[0], old


def _consumes_padded(graph, index, node, real: int, size: int) -> str:
    """Rewrite `node` to read the padded tensor: 'through' (its output is padded too),
    'absorb' (its output is not), or '' where it needs the original channels."""
    if node.op_type in PASS_THROUGH:
        rest = [i for i in node.input[1:] if i]
        return "through" if all(index.const(i) is not None for i in rest) else ""
    found = conv_weights(node, index)
    if found is None:
        return ""
    w, b = found
    group = attr(node, "group", 1)
    if group == real and w.shape[:2] == (real, 1):
        _pad_filters(graph, node, w, b, size)
        set_attr(node, "group", size)
        return "through"
    if group == 1 and w.shape[1] == real:
        write_input(graph, node, 1, _pad(w, 1, size))
        return "absorb"
    return ""


def _slice_back(graph, producer, padded: str, name: str, real: int) -> None:
    consts = [set_const(graph, unique_name(graph, f"{name}_{k}"), np.array([v], np.int64))
              for k, v in (("starts", 0), ("ends", real), ("axes", 1))]
    node = helper.make_node("Slice", [padded, *consts], [name], name=f"{name}_unpad")
    graph.node.insert(list(graph.node).index(producer) + 1, node)


def _propagate(graph, producer, padded: str, name: str, real: int, size: int) -> None:
    index = GraphIndex(graph)
    keep = name in index.outputs
    for node in list(index.consumers.get(name, [])):
        if node.input[0] != name or name in node.input[1:]:
            keep = True
            continue
        how = _consumes_padded(graph, index, node, real, size)
        if not how:
            keep = True
            continue
        node.input[0] = padded
        if how == "through":
            out_padded, out = rename_output(graph, node)
            _propagate(graph, node, out_padded, out, real, size)
    if keep:
        _slice_back(graph, producer, padded, name, real)


def pad_channels(model: onnx.ModelProto, *, multiple: int,
                 max_waste: float = 0.25) -> tuple[onnx.ModelProto, PassReport]:
    """Pad group-1 2-D convs' output channels to a multiple of `multiple` (see module doc)."""
    out = onnx.ModelProto()
    out.CopyFrom(model)
    graph = out.graph
    report = PassReport("pad_channels")
    if multiple < 2:
        return out, report
    for node in list(graph.node):
        index = GraphIndex(graph)
        found = conv_weights(node, index)
        if found is None or attr(node, "group", 1) != 1:
            continue
        w, b = found
        real = w.shape[0]
        size = -(-real // multiple) * multiple
        if size == real:
            continue
        if (size - real) / real > max_waste:
            report.decline(node.name or node.output[0],
                           f"{real} channels would need {size - real} more "
                           f"(over {max_waste:.0%})")
            continue
        _pad_filters(graph, node, w, b, size)
        padded, name = rename_output(graph, node)
        _propagate(graph, node, padded, name, real, size)
        report.count(f"conv {real}->{size}")
    if report.changed:
        tidy(graph)
    return out, report
