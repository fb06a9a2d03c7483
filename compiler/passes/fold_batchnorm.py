"""fold_batchnorm: fold inference BatchNormalization into the neighbouring linear op.

At inference BN is a per-channel affine map on axis 1:
    y = s * x + t,   s = gamma / sqrt(var + eps),   t = beta - mean * s.

Patterns, tried in this order for each BN whose parameters are constants:
1. P -> BN, P in {Conv (1D/2D/3D, any group), ConvTranspose, Gemm, MatMul (2-D output)} with
   constant weights and P's output used only by the BN. Output channel o of P is scaled:
   W'[o] = s[o] * W[o], b' = s * b + t. (Gemm: C' = s * beta * C + t with beta := 1; MatMul
   becomes Gemm(X, W', t). ConvTranspose's weight is [C_in, C_out/g, k...]: output channel
   o = group * C_out/g + j is dim 1 within its group.)
2. BN -> Conv, the BN's output used only by that Conv and the Conv has no padding: then
   conv(s*x + t) = conv_{W*s}(x) + sum_{c,k} W[o,c,k] * t[c], exact. With zero padding the
   border sees 0 where it would see t, so that case is not folded.
3. Otherwise the BN becomes Mul(x, s) then Add(., t), broadcast over axis 1, and the report
   says why it could not fold into a neighbour.
Declines, leaving the BN as it is: non-constant BN parameters, training mode, used mask outputs.
A fold replaces the conv's weights and drops the BN, so the old weights and the BN parameters
(often Constant nodes folded into initializers by cleanup) are then read by nothing: the pass
removes them (graph.drop_dead) so the optimized model never carries both copies.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import helper

from .graph import GraphIndex, attr, drop_dead, set_attr, set_const, unique_name
from .report import PassReport
from .rules import Rule, apply_rules

_FOLD_INTO = ("Conv", "ConvTranspose", "Gemm", "MatMul")


def _affine(bn: onnx.NodeProto, index: GraphIndex) -> tuple[np.ndarray, np.ndarray] | None:
    params = [index.const(i) for i in bn.input[1:5]]
    if any(p is None for p in params):
        return None
    gamma, beta, mean, var = (p.astype(np.float64) for p in params)
    s = gamma / np.sqrt(var + attr(bn, "epsilon", 1e-5))
    return s, beta - mean * s


def _bias(index, node, pos: int, n: int) -> np.ndarray | None:
    """The constant bias input at `pos` as float64 (zeros when absent); None if not constant."""
    if len(node.input) <= pos or not node.input[pos]:
        return np.zeros(n)
    b = index.const(node.input[pos])
    return None if b is None else b.astype(np.float64)


def _write(graph, node, pos: int, base: str, value: np.ndarray, dtype) -> None:
    name = unique_name(graph, f"{node.name or node.op_type}_{base}_folded")
    set_const(graph, name, value.astype(dtype))
    while len(node.input) <= pos:
        node.input.append("")
    node.input[pos] = name


def _producer_reason(index: GraphIndex, p: onnx.NodeProto, n: int) -> str | None:
    """Why the BN's producer p cannot take its s, t (None: it can); n = len(s)."""
    w = index.const(p.input[1])
    if w is None:
        return f"{p.op_type} weights are not constants"
    if p.op_type == "MatMul" and w.ndim != 2:
        return "MatMul weight is not 2-D"
    if p.op_type in ("Conv", "ConvTranspose", "Gemm") and _bias(index, p, 2, n) is None:
        return f"{p.op_type} bias is not a constant"
    return None


def _into_producer(graph, index, p: onnx.NodeProto, s, t) -> None:
    """Fold s, t into producer p (its _producer_reason is None)."""
    w = index.const(p.input[1])
    dtype, w64 = w.dtype, w.astype(np.float64)
    if p.op_type == "Conv":
        bias = _bias(index, p, 2, w.shape[0])
        w64 = w64 * s.reshape(-1, *[1] * (w.ndim - 1))
    elif p.op_type == "ConvTranspose":
        g = attr(p, "group", 1)
        cin, cout_g = w.shape[0], w.shape[1]
        bias = _bias(index, p, 2, g * cout_g)
        scale = s.reshape(g, 1, cout_g, *[1] * (w.ndim - 2))
        w64 = (w64.reshape(g, cin // g, cout_g, *w.shape[2:]) * scale).reshape(w.shape)
    elif p.op_type == "Gemm":
        if attr(p, "transB", 0):
            w64 = w64 * s[:, None]
        else:
            w64 = w64 * s[None, :]
        bias = _bias(index, p, 2, len(s)) * attr(p, "beta", 1.0)
        set_attr(p, "beta", 1.0)
    else:  # MatMul with a 2-D constant right operand becomes Gemm
        w64, bias = w64 * s[None, :], np.zeros(len(s))
        p.op_type = "Gemm"
    _write(graph, p, 1, "w", w64, dtype)
    _write(graph, p, 2, "b", bias * s + t, dtype)


def _consumer_reason(index: GraphIndex, conv: onnx.NodeProto) -> str | None:
    if any(attr(conv, "pads", [])) or attr(conv, "auto_pad", b"NOTSET") not in (
            b"NOTSET", b"VALID"):
        return "the following Conv pads with zeros (folding would change its border)"
    w = index.const(conv.input[1])
    if w is None:
        return "the following Conv's weights are not constants"
    if _bias(index, conv, 2, w.shape[0]) is None:
        return "the following Conv's bias is not a constant"
    return None


def _into_consumer(graph, index, conv: onnx.NodeProto, s, t) -> None:
    """conv(s*x + t) = conv_{W*s}(x) + sum_{c,k} W[o,c,k] t[c] (its _consumer_reason is None)."""
    w = index.const(conv.input[1])
    g = attr(conv, "group", 1)
    cout, cin_g = w.shape[:2]
    # s_oc[o, ci] = s[c] for input channel c = group(o) * cin_g + ci
    s_oc = s.reshape(g, cin_g)[np.arange(cout) // (cout // g)]
    t_oc = t.reshape(g, cin_g)[np.arange(cout) // (cout // g)]
    bias = _bias(index, conv, 2, cout)
    w64 = w.astype(np.float64)
    spatial = (1,) * (w.ndim - 2)
    extra = (w64 * t_oc.reshape(cout, cin_g, *spatial)).reshape(cout, -1).sum(1)
    _write(graph, conv, 1, "w", w64 * s_oc.reshape(cout, cin_g, *spatial), w.dtype)
    _write(graph, conv, 2, "b", bias + extra, w.dtype)


def _rank(model: onnx.ModelProto, name: str) -> int | None:
    for vi in [*model.graph.input, *model.graph.value_info, *model.graph.output]:
        if vi.name == name and vi.type.tensor_type.HasField("shape"):
            return len(vi.type.tensor_type.shape.dim)
    return None


def _scale_shift(model, bn: onnx.NodeProto, s, t, dtype) -> bool:
    graph = model.graph
    rank = _rank(model, bn.input[0])
    if rank is None:
        return False
    shape = (-1,) + (1,) * (rank - 2)
    base = bn.name or "bn"
    s_name = set_const(graph, unique_name(graph, f"{base}_scale"), s.reshape(shape).astype(dtype))
    t_name = set_const(graph, unique_name(graph, f"{base}_shift"), t.reshape(shape).astype(dtype))
    mid = unique_name(graph, f"{base}_scaled")
    pos = list(graph.node).index(bn)
    graph.node.insert(pos, helper.make_node("Add", [mid, t_name], [bn.output[0]],
                                            name=f"{base}_shift"))
    graph.node.insert(pos, helper.make_node("Mul", [bn.input[0], s_name], [mid],
                                            name=f"{base}_scale"))
    graph.node.remove(bn)
    return True


def _rules(model: onnx.ModelProto) -> list[Rule]:
    """The three rules, in the order they are tried (module docstring: 1, 2, 3)."""
    graph = model.graph

    def bn(node: onnx.NodeProto, index: GraphIndex) -> bool:
        return node.op_type == "BatchNormalization"

    def params(node: onnx.NodeProto, index: GraphIndex) -> str | None:
        if attr(node, "training_mode", 0) or any(index.uses(o) for o in node.output[1:] if o):
            return "training mode or running statistics used"
        return None if _affine(node, index) else "BatchNorm parameters are not constants"

    def producer_check(node, index) -> str | None:
        p = index.producer.get(node.input[0])
        if p is None or p.op_type not in _FOLD_INTO:
            return "no Conv, ConvTranspose, Gemm or MatMul next to it"
        if index.uses(node.input[0]) != 1:
            return f"{p.op_type} output has other consumers"
        if p.op_type == "MatMul" and _rank(model, node.input[0]) != 2:
            return "MatMul output is not 2-D"
        return _producer_reason(index, p, len(_affine(node, index)[0]))

    def into_producer(node, index) -> str:
        p = index.producer[node.input[0]]
        _into_producer(graph, index, p, *_affine(node, index))  # a MatMul becomes a Gemm
        p.output[0] = node.output[0]
        graph.node.remove(node)
        return f"{p.op_type.lower()}+bn"

    def single_conv_user(node, index) -> bool:
        users = index.consumers.get(node.output[0], [])
        return (len(users) == 1 and index.uses(node.output[0]) == 1
                and users[0].op_type == "Conv" and users[0].input[0] == node.output[0])

    def into_consumer(node, index) -> None:  # counted as the rule's name
        conv = index.consumers[node.output[0]][0]
        _into_consumer(graph, index, conv, *_affine(node, index))
        conv.input[0] = node.input[0]
        graph.node.remove(node)

    def rank_known(node, index) -> str | None:
        known = _rank(model, node.input[0]) is not None
        return None if known else "input rank unknown, left as is"

    def scale_shift(node, index) -> None:
        s, t = _affine(node, index)
        _scale_shift(model, node, s, t, index.const(node.input[1]).dtype)

    def first(*checks):  # the BN's own preconditions, then the rule's
        return lambda node, index: next(
            (why for check in checks if (why := check(node, index)) is not None), None)

    return [
        Rule("producer+bn", bn, first(params, producer_check), into_producer),
        Rule("bn+conv", lambda n, i: bn(n, i) and single_conv_user(n, i),
             first(params, lambda n, i: _consumer_reason(i, i.consumers[n.output[0]][0])),
             into_consumer),
        Rule("bn->scale_shift", bn, first(params, rank_known), scale_shift,
             fallback="Mul+Add"),
    ]


def fold_batchnorm(model: onnx.ModelProto) -> tuple[onnx.ModelProto, PassReport]:
    report = PassReport("fold_batchnorm")
    model = onnx.shape_inference.infer_shapes(model)
    graph = model.graph
    apply_rules(graph, _rules(model), report,
                anchors=lambda n: n.op_type == "BatchNormalization")
    if report.changed:
        for what, n in drop_dead(graph).items():
            report.count(what, n)
        del graph.value_info[:]
        model = onnx.shape_inference.infer_shapes(model)
    return model, report
