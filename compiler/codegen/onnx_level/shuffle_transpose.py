"""shuffle_transpose: a strided ConvTranspose as a stride-1 Conv and a pixel shuffle
(DepthToSpace), the sub-pixel form of a transposed convolution.

Pattern: a 2-D ConvTranspose with constant weights W[C_in, C_out, k, k] (and bias b), group
1, stride s in both dims, pads p on every side, no output padding or dilation, with k - 2p a
positive multiple of s: the FPN/U-Net upsamplers of detectors and segmenters (2x2 stride 2,
DBNet's decoder; 4x4 stride 2 pad 1, DCGAN-style decoders).

Math (per spatial dim): output o = m*s + i (phase i in [0, s)) receives x[ih] * W[kh] where
ih*s - p + kh = o, i.e. kh = i + p - s*d and ih = m + d for the integers d that put kh in
[0, k). So phase i is a correlation over x[m + d], d in [d_lo, d_hi] (the range over all
phases), and all phases together are one stride-1 Conv with C_out*s*s output channels, kernel
K = d_hi - d_lo + 1, pads (-d_lo, M - H + d_hi) for M = H - 1 + (k - 2p)/s outputs per phase
from H inputs:

    W'[c*s*s + i*s + j, k_in, dh - d_lo, dw - d_lo] = W[k_in, c, i + p - s*dh, j + p - s*dw]
    (zero where that kh or kw is outside [0, k)),   b'[c*s*s + i*s + j] = b[c]

followed by DepthToSpace(blocksize s, CRD): channel c*s*s + i*s + j at (m, n) -> output
channel c at (m*s + i, n*s + j). The same products and sums; only the zero taps are extra:
(K*s/k)^2 times the MACs (1 for k = s; 2.25 for 4x4 stride 2 pad 1, whose 3x3 conv Winograd
then takes back). Rewrites costing more than MAX_INFLATION are declined.

Why: TVM's ConvTranspose kernel ran DBNet's 2x2 decoder at 4.8 GFLOP/s (48% of the model's
time), and a 4x4 decoder under qemu issued 28x onnxruntime's instructions on a Cortex-A72;
a stride-1 conv takes the CPU conv rules, and the shuffle is a move that
relax_level/merge_moves folds into its reader.

Declines (reason in the report): weights or bias not constant, group != 1, unequal strides or
pads, non-square kernel, output padding, dilation, output_shape, auto_pad, k - 2p not a
positive multiple of s, MAC inflation over MAX_INFLATION, a rank other than 4.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import helper

from edgec.compiler.passes.graph import (
    GraphIndex,
    attr,
    replace_node,
    set_const,
    tidy,
    unique_name,
)
from edgec.compiler.passes.report import PassReport

MAX_INFLATION = 2.25  # MACs of the stride-1 conv / the ConvTranspose's


def taps(k: int, s: int, p: int) -> tuple[dict[tuple[int, int], int], int, int]:
    """{(phase i, offset d): kernel tap kh} of one spatial dim, and d's range (d_lo, d_hi)."""
    found = {(i, (i + p - kh) // s): kh for i in range(s) for kh in range(k)
             if (i + p - kh) % s == 0}
    offsets = [d for _, d in found]
    return found, min(offsets), max(offsets)


def _decline_reason(node: onnx.NodeProto, w: np.ndarray | None) -> str:
    """Why `node` does not match the pattern, or '' where it does."""
    if w is None:
        return "weights are not a constant"
    if w.ndim != 4:
        return f"{w.ndim - 2}-D kernel (2-D only)"
    k, s = w.shape[2], list(attr(node, "strides", [1, 1]))
    pads = list(attr(node, "pads", [0] * 4))
    checks = [
        (attr(node, "group", 1) != 1, "grouped"),
        (w.shape[2] != w.shape[3], f"non-square {w.shape[2]}x{w.shape[3]} kernel"),
        (s[0] != s[1], f"unequal strides {s}"),
        (len(set(pads)) != 1, f"unequal pads {pads}"),
        (any(attr(node, "output_padding", [0, 0])), "output padding"),
        (any(d != 1 for d in attr(node, "dilations", [1, 1])), "dilated"),
        (attr(node, "output_shape") is not None, "output_shape given"),
        (attr(node, "auto_pad", b"NOTSET") not in (b"NOTSET", "NOTSET"), "auto_pad"),
    ]
    why = next((why for bad, why in checks if bad), "")
    if why:
        return why
    s, p = s[0], pads[0]
    if k - 2 * p < s or (k - 2 * p) % s:
        return f"kernel {k} - 2 x pad {p} is not a positive multiple of stride {s}"
    _, lo, hi = taps(k, s, p)
    inflation = ((hi - lo + 1) * s / k) ** 2
    if lo > 0 or inflation > MAX_INFLATION:
        return f"the stride-1 form costs {inflation:.2f}x the MACs"
    return ""


def _weights(w: np.ndarray, s: int, p: int) -> tuple[np.ndarray, list[int]]:
    """The stride-1 Conv's weights W' and pads (module docstring)."""
    c_in, c_out, k, _ = w.shape
    found, lo, hi = taps(k, s, p)
    size = hi - lo + 1
    out = np.zeros((c_out * s * s, c_in, size, size), w.dtype)
    for (i, dh), kh in found.items():
        for (j, dw), kw in found.items():
            out[i * s + j::s * s, :, dh - lo, dw - lo] = w[:, :, kh, kw].T
    after = (k - 2 * p) // s - 1 + hi  # M - H + d_hi
    return out, [-lo, -lo, after, after]


def _rewrite(graph: onnx.GraphProto, node: onnx.NodeProto, w: np.ndarray,
             b: np.ndarray | None) -> str:
    """Replace `node`; what was rewritten, for the report."""
    s, p = attr(node, "strides", [1, 1])[0], attr(node, "pads", [0] * 4)[0]
    name = node.name or node.output[0]
    w1, pads = _weights(w, s, p)
    inputs = [node.input[0], set_const(graph, unique_name(graph, f"{name}_w"), w1)]
    if b is not None:
        inputs.append(set_const(graph, unique_name(graph, f"{name}_b"), np.repeat(b, s * s)))
    deep = node.output[0] if s == 1 else unique_name(graph, f"{node.output[0]}_deep")
    nodes = [helper.make_node("Conv", inputs, [deep], name=f"{name}_conv",
                              kernel_shape=list(w1.shape[2:]), pads=pads)]
    if s > 1:
        nodes.append(helper.make_node("DepthToSpace", [deep], [node.output[0]],
                                      name=f"{name}_shuffle", blocksize=int(s), mode="CRD"))
    replace_node(graph, node, nodes)
    return f"{w.shape[2]}x{w.shape[3]} stride-{s} pad-{p} ConvTranspose"


def shuffle_transpose(model: onnx.ModelProto) -> tuple[onnx.ModelProto, PassReport]:
    """Every matching ConvTranspose as a stride-1 Conv + DepthToSpace (module docstring)."""
    out = onnx.ModelProto()
    out.CopyFrom(model)
    graph = out.graph
    report = PassReport("shuffle_transpose")
    for node in [n for n in graph.node if n.op_type == "ConvTranspose"]:
        index = GraphIndex(graph)
        w = index.const(node.input[1]) if len(node.input) > 1 else None
        has_bias = len(node.input) > 2 and bool(node.input[2])
        b = index.const(node.input[2]) if has_bias else None
        why = _decline_reason(node, w) or ("bias is not a constant" if has_bias and b is None
                                          else "")
        if why:
            report.decline(node.name or node.output[0], why)
            continue
        report.count(_rewrite(graph, node, w, b))
    if report.changed:
        tidy(graph)
    return out, report
