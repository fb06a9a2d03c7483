"""shuffle_transpose: a ConvTranspose whose kernel equals its stride as a 1x1 conv and a
pixel shuffle (DepthToSpace).

Pattern: a 2-D ConvTranspose with constant weights W[C_in, C_out, s_h, s_w] (and bias b),
group 1, strides (s_h, s_w) equal to the kernel, no padding, output padding or dilation: the
FPN/U-Net upsampler of detectors and segmenters (DBNet's 2x2 stride-2 decoder).

Math: each input pixel (h, w) writes its own s_h x s_w block of the output, with no overlap:

    y[c, h*s_h + i, w*s_w + j] = b[c] + sum_k x[k, h, w] * W[k, c, i, j]

which is a 1x1 conv to C_out*s_h*s_w channels, channel c*s_h*s_w + i*s_w + j holding
(c, i, j), followed by DepthToSpace in CRD order (that same channel -> output (c, i, j)):

    W'[c*s_h*s_w + i*s_w + j, k, 0, 0] = W[k, c, i, j],   b'[c*s_h*s_w + i*s_w + j] = b[c]

The same products and sums, in another layout. DepthToSpace takes square blocks, so s_h =
s_w. Why: TVM's ConvTranspose kernel ran DBNet's 10 -> 10 channel 2x2 decoder at 4.8 GFLOP/s
(48% of the model's time); the 1x1 conv gets the CPU conv rule, and the shuffle is a move
that relax_level/merge_moves folds into its reader.

Declines (reason in the report): weights not constant, group != 1, kernel != stride, a
non-square block, padding, output padding, dilation, output_shape given, or a rank other than 4.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import helper

from edgec.compiler.passes.graph import GraphIndex, attr, set_const, tidy, unique_name
from edgec.compiler.passes.report import PassReport


def _decline_reason(node: onnx.NodeProto, w: np.ndarray | None) -> str:
    """Why `node` does not match the pattern, or '' where it does."""
    if w is None:
        return "weights are not a constant"
    if w.ndim != 4:
        return f"{w.ndim - 2}-D kernel (2-D only)"
    kernel = list(w.shape[2:])
    strides = list(attr(node, "strides", [1, 1]))
    checks = [
        (attr(node, "group", 1) != 1, "grouped"),
        (strides != kernel, f"kernel {kernel} is not the stride {strides}"),
        (kernel[0] != kernel[1], f"non-square {kernel[0]}x{kernel[1]} blocks"),
        (any(attr(node, "pads", [0] * 4)), "padded"),
        (any(attr(node, "output_padding", [0, 0])), "output padding"),
        (any(d != 1 for d in attr(node, "dilations", [1, 1])), "dilated"),
        (attr(node, "output_shape") is not None, "output_shape given"),
        (attr(node, "auto_pad", b"NOTSET") not in (b"NOTSET", "NOTSET", b"VALID", "VALID"),
         "auto_pad"),
    ]
    return next((why for bad, why in checks if bad), "")


def _rewrite(graph: onnx.GraphProto, node: onnx.NodeProto, w: np.ndarray,
             b: np.ndarray | None) -> None:
    c_in, c_out, s, _ = w.shape
    name = node.name or node.output[0]
    w1 = w.transpose(1, 2, 3, 0).reshape(c_out * s * s, c_in, 1, 1)
    inputs = [node.input[0], set_const(graph, unique_name(graph, f"{name}_w1x1"), w1)]
    if b is not None:
        inputs.append(set_const(graph, unique_name(graph, f"{name}_b1x1"), np.repeat(b, s * s)))
    deep = unique_name(graph, f"{node.output[0]}_deep")
    conv = helper.make_node("Conv", inputs, [deep], name=f"{name}_1x1", kernel_shape=[1, 1])
    shuffle = helper.make_node("DepthToSpace", [deep], [node.output[0]], name=f"{name}_shuffle",
                               blocksize=int(s), mode="CRD")
    at = list(graph.node).index(node)
    graph.node.remove(node)
    graph.node.insert(at, shuffle)
    graph.node.insert(at, conv)


def shuffle_transpose(model: onnx.ModelProto) -> tuple[onnx.ModelProto, PassReport]:
    """Every matching ConvTranspose as a 1x1 Conv + DepthToSpace (module docstring)."""
    out = onnx.ModelProto()
    out.CopyFrom(model)
    graph = out.graph
    report = PassReport("shuffle_transpose")
    for node in [n for n in graph.node if n.op_type == "ConvTranspose"]:
        index = GraphIndex(graph)
        w = index.const(node.input[1]) if len(node.input) > 1 else None
        b = index.const(node.input[2]) if len(node.input) > 2 and node.input[2] else None
        has_bias = len(node.input) > 2 and bool(node.input[2])
        why = _decline_reason(node, w) or ("bias is not a constant" if has_bias and b is None
                                          else "")
        if why:
            report.decline(node.name or node.output[0], why)
            continue
        _rewrite(graph, node, w, b)
        report.count(f"{w.shape[2]}x{w.shape[3]} stride-{w.shape[2]} ConvTranspose")
    if report.changed:
        tidy(graph)
    return out, report
