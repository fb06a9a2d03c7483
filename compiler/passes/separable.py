"""separable: a standard KxK conv as a depthwise KxK conv and a 1x1 conv (network decoupling).

Pattern: a 2-D Conv with group 1, a kernel of K = kH * kW > 1 taps and constant weights W
[N, C, kH, kW] (bias optional). Math: for each input channel c, W[:, c] reshaped N x K is
U S V^T (SVD). Keeping the first T terms, W[n, c, :] ~ sum_t U[n, t] S[t] V[t, :]: a depthwise
conv (group C, C*T outputs; output c*T + t filters input c with V[t] reshaped kH x kW, with
the conv's strides, pads and dilations) and then a 1x1 conv whose weight at [n, c*T + t] is
U[n, t] S[t], carrying the bias. At T = min(N, K) the pair equals the conv up to float
rounding; below it, it keeps the terms with the largest singular values of every channel.
MACs against the dense conv: T/N + T/K.

Options (`SeparableOptions`): `rank` T, or `energy`, the share of each channel's sum of S^2
to keep (T is then the most any channel needs); neither: full rank (exact). `only_cheaper`
declines a conv whose pair would not have fewer MACs. Lossy below full rank: judged by
accuracy on data (edgec validate), not by a tolerance.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx
from onnx import helper

from .graph import GraphIndex, attr, drop_dead, set_const, unique_name
from .report import PassReport
from .rules import Rule, apply_rules


@dataclass(frozen=True)
class SeparableOptions:
    rank: int | None = None  # terms per input channel; None: from `energy`, else full rank
    energy: float | None = None  # share of each channel's sum of S^2 to keep, in (0, 1]
    only_cheaper: bool = True  # decline where the pair has as many MACs as the conv or more


def _weights(node: onnx.NodeProto, index: GraphIndex) -> np.ndarray | None:
    return index.const(node.input[1]) if len(node.input) > 1 else None


def _check(node: onnx.NodeProto, index: GraphIndex, opts: SeparableOptions) -> str | None:
    w = _weights(node, index)
    if w is None:
        return "weights are not a constant"
    if w.ndim != 4:
        return f"{w.ndim - 2}-D conv; the rule splits 2-D kernels"
    if attr(node, "group", 1) != 1:
        return "already grouped or depthwise"
    n, _, kh, kw = w.shape
    if kh * kw == 1:
        return "1x1 kernel: no spatial taps to split"
    if len(node.input) > 2 and node.input[2] and index.const(node.input[2]) is None:
        return "bias is not a constant"
    t = _rank(w, opts)
    if opts.only_cheaper and t / n + t / (kh * kw) >= 1:
        return f"rank {t} of {min(n, kh * kw)} saves no MACs ({t}/{n} + {t}/{kh * kw} >= 1)"
    return None


def _rank(w: np.ndarray, opts: SeparableOptions) -> int:
    n, _, kh, kw = w.shape
    full = min(n, kh * kw)
    if opts.rank is not None:
        return max(1, min(opts.rank, full))
    if opts.energy is None:
        return full
    s = np.linalg.svd(w.reshape(n, w.shape[1], -1).transpose(1, 0, 2), compute_uv=False)
    share = np.cumsum(s ** 2, axis=1) / np.maximum(np.sum(s ** 2, axis=1, keepdims=True), 1e-30)
    return int(max(np.searchsorted(row, opts.energy - 1e-12) + 1 for row in share))


def _factors(w: np.ndarray, t: int) -> tuple[np.ndarray, np.ndarray]:
    """Depthwise weights [C*T, 1, kH, kW] and 1x1 weights [N, C*T, 1, 1] of rank t."""
    n, c, kh, kw = w.shape
    u, s, vt = np.linalg.svd(w.astype(np.float64).reshape(n, c, -1).transpose(1, 0, 2),
                             full_matrices=False)  # per channel: [n, k], [k], [k, k]
    depthwise = vt[:, :t, :].reshape(c * t, 1, kh, kw)
    pointwise = (u[:, :, :t] * s[:, None, :t]).transpose(1, 0, 2).reshape(n, c * t, 1, 1)
    return depthwise.astype(w.dtype), pointwise.astype(w.dtype)


def _rewrite(node: onnx.NodeProto, index: GraphIndex, opts: SeparableOptions) -> str:
    graph = index.graph
    w = _weights(node, index)
    t = _rank(w, opts)
    depthwise, pointwise = _factors(w, t)
    base = node.name or node.output[0]
    dw_w = set_const(graph, unique_name(graph, f"{base}_dw_weight"), depthwise)
    pw_w = set_const(graph, unique_name(graph, f"{base}_pw_weight"), pointwise)
    mid = unique_name(graph, f"{base}_dw_out")
    keep = {a.name: a for a in node.attribute if a.name != "group"}
    dw = helper.make_node("Conv", [node.input[0], dw_w], [mid], name=f"{base}_dw",
                          group=w.shape[1])
    dw.attribute.extend(keep.values())
    pw_inputs = [mid, pw_w] + ([node.input[2]] if len(node.input) > 2 and node.input[2] else [])
    pw = helper.make_node("Conv", pw_inputs, list(node.output), name=f"{base}_pw",
                          kernel_shape=[1, 1])
    at = [i for i, n in enumerate(graph.node) if n is node][0]
    del graph.node[at]
    graph.node.insert(at, pw)
    graph.node.insert(at, dw)
    return "conv->depthwise+1x1" if t == min(w.shape[0], w.shape[2] * w.shape[3]) \
        else f"conv->depthwise+1x1 rank {t}"


def separable(model: onnx.ModelProto,
              options: SeparableOptions | None = None) -> tuple[onnx.ModelProto, PassReport]:
    opts = options or SeparableOptions()
    report = PassReport("separable")
    model = onnx.ModelProto.FromString(model.SerializeToString())
    rule = Rule("conv->depthwise+1x1", lambda n, i: n.op_type == "Conv",
                lambda n, i: _check(n, i, opts), lambda n, i: _rewrite(n, i, opts))
    apply_rules(model.graph, [rule], report, anchors=lambda n: n.op_type == "Conv")
    if report.changed:
        drop_dead(model.graph)
        del model.graph.value_info[:]
        model = onnx.shape_inference.infer_shapes(model)
    return model, report
