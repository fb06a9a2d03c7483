"""fold_depth: a 3-D convolution as a 2-D one over depth-folded batch, its depth taps stacked as
input channels.

Pattern: a Conv with constant weights W[O, C, k_d, k_h, k_w] (group 1), a 5-D input
x[N, C, D, H, W] of static shape, explicit pads (no auto_pad): the conv layers of C3D-style
video and volumetric models.

Math: with x' = x zero-padded in depth by (p_d0, p_d1), output depth index e reads depths
e*s_d + t*d_d for the taps t in [0, k_d):

    y[n, o, e] = b[o] + sum_t conv2d(x'[n, :, e*s_d + t*d_d], W[:, :, t])      (conv2d over h, w)
               = b[o] + conv2d(X[n*E + e], W')

where X[n*E + e, t*C + c] = x'[n, c, e*s_d + t*d_d] (the k_d depth-shifted slices, stacked as
channels, depth folded into the batch) and W'[o, t*C + c] = W[o, c, t]: one 2-D conv with k_d*C
input channels, the same products and sums. ONNX: Pad (depth) -> k_d strided Slices -> Concat
(channels) -> Transpose + Reshape to [N*E, k_d*C, H, W] -> Conv (2-D strides, pads,
dilations of h and w) -> Reshape + Transpose back to [N, O, E, H', W'].

Why: the `cpu` pipeline's layout, tile and Winograd rules are written for 2-D convs; a C3D
conv3d kernel ran at 31-94 GFLOP/s (3.6x onnxruntime's time) where its 2-D form gets the
channels-last conv rules. The stacked input costs k_d copies of the input in memory traffic.

Declines (reason in the report): weights not constant, grouped, auto_pad, not 5-D, an input
shape not known statically.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import helper

from edgec.compiler.passes.fold_constants import static_shapes
from edgec.compiler.passes.graph import (
    GraphIndex,
    attr,
    replace_node,
    set_const,
    tidy,
    unique_name,
)
from edgec.compiler.passes.report import PassReport


def _decline_reason(node: onnx.NodeProto, w: np.ndarray | None,
                    shape: list[int] | None) -> str:
    if w is None:
        return "weights are not a constant"
    if attr(node, "group", 1) != 1:
        return "grouped"
    if attr(node, "auto_pad", b"NOTSET") not in (b"NOTSET", "NOTSET"):
        return "auto_pad"
    if shape is None:
        return "input shape not static"
    return ""


class _Builder:
    """Collects the nodes (in order) that replace one conv; constants go into the graph at
    once. Each name is `{base}_{tag}`, the tags distinct, made unique against the graph."""

    def __init__(self, graph: onnx.GraphProto, base: str):
        self.graph, self.base, self.nodes = graph, base, []

    def const(self, tag: str, value: np.ndarray) -> str:
        return set_const(self.graph, unique_name(self.graph, f"{self.base}_{tag}"), value)

    def node(self, op: str, inputs: list[str], tag: str, out: str | None = None, **attrs) -> str:
        out = out or unique_name(self.graph, f"{self.base}_{tag}")
        self.nodes.append(helper.make_node(op, inputs, [out], name=f"{self.base}_{tag}", **attrs))
        return out


def _stacked_input(b: _Builder, x: str, shape: list[int], k_d: int, pads: list[int],
                   stride: int, dilation: int) -> tuple[str, int]:
    """The [N*E, k_d*C, H, W] input of the 2-D conv, and E (the output depth)."""
    n, c, d, h, w = shape
    depth = d + pads[0] + pads[3]
    e = (depth - dilation * (k_d - 1) - 1) // stride + 1
    if pads[0] or pads[3]:
        pad = np.array([0, 0, pads[0], 0, 0, 0, 0, pads[3], 0, 0], np.int64)
        x = b.node("Pad", [x, b.const("dpads", pad)], "dpad")
    taps = []
    for t in range(k_d):
        start = t * dilation
        taps.append(b.node("Slice", [x, b.const(f"s{t}", np.array([start], np.int64)),
                                     b.const(f"e{t}", np.array([start + stride * (e - 1) + 1],
                                                               np.int64)),
                                     b.const(f"a{t}", np.array([2], np.int64)),
                                     b.const(f"st{t}", np.array([stride], np.int64))],
                           f"tap{t}"))
    stacked = taps[0] if k_d == 1 else b.node("Concat", taps, "taps", axis=1)
    moved = b.node("Transpose", [stacked], "fold", perm=[0, 2, 1, 3, 4])
    return b.node("Reshape", [moved, b.const("shape2d", np.array([n * e, k_d * c, h, w],
                                                                  np.int64))], "flat"), e


def _rewrite(graph: onnx.GraphProto, node: onnx.NodeProto, w: np.ndarray,
             shape: list[int]) -> None:
    b = _Builder(graph, node.name or node.output[0])
    pads = list(attr(node, "pads", [0] * 6))
    strides = list(attr(node, "strides", [1, 1, 1]))
    dilations = list(attr(node, "dilations", [1, 1, 1]))
    o, c, k_d, k_h, k_w = w.shape
    flat, e = _stacked_input(b, node.input[0], shape, k_d, pads, strides[0], dilations[0])
    w2 = b.const("w2d", np.ascontiguousarray(w.transpose(0, 2, 1, 3, 4)).reshape(
        o, k_d * c, k_h, k_w))
    inputs = [flat, w2] + ([node.input[2]] if len(node.input) > 2 and node.input[2] else [])
    conv = b.node("Conv", inputs, "conv2d", kernel_shape=[k_h, k_w], strides=strides[1:],
                  dilations=dilations[1:], pads=[pads[1], pads[2], pads[4], pads[5]])
    h2, w2d = ((shape[3 + i] + pads[1 + i] + pads[4 + i] - dilations[1 + i] * (k - 1) - 1)
               // strides[1 + i] + 1 for i, k in enumerate((k_h, k_w)))
    back = b.node("Reshape", [conv, b.const("shape5d", np.array([shape[0], e, o, h2, w2d],
                                                                 np.int64))], "unflat")
    b.node("Transpose", [back], "unfold", out=node.output[0], perm=[0, 2, 1, 3, 4])
    replace_node(graph, node, b.nodes)


def fold_depth(model: onnx.ModelProto) -> tuple[onnx.ModelProto, PassReport]:
    """Every matching 3-D Conv as a 2-D Conv over depth-folded batch (module docstring)."""
    out = onnx.ModelProto()
    out.CopyFrom(model)
    graph = out.graph
    report = PassReport("fold_depth")
    convs = [n for n in graph.node if n.op_type == "Conv"]
    shapes = static_shapes(onnx.shape_inference.infer_shapes(out)) if convs else {}
    for node in convs:
        kernel = attr(node, "kernel_shape", None) or shapes.get(node.input[1], [0, 0])[2:]
        if len(kernel) != 3:
            continue  # not a 3-D conv
        w = GraphIndex(graph).const(node.input[1])
        why = _decline_reason(node, w, shapes.get(node.input[0]))
        if why:
            report.decline(node.name or node.output[0], why)
            continue
        _rewrite(graph, node, w, shapes[node.input[0]])
        report.count(f"conv3d {'x'.join(map(str, w.shape[2:]))}")
    if report.changed:
        tidy(graph)
    return out, report
