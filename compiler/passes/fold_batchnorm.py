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

_FOLD_INTO = ("Conv", "ConvTranspose", "Gemm", "MatMul")


def _affine(bn: onnx.NodeProto, index: GraphIndex) -> tuple[np.ndarray, np.ndarray] | None:
    params = [index.const(i) for i in bn.input[1:5]]
    if any(p is None for p in params):
        return None
    gamma, beta, mean, var = (p.astype(np.float64) for p in params)
    s = gamma / np.sqrt(var + attr(bn, "epsilon", 1e-5))
    return s, beta - mean * s


def _bias(graph, index, node, pos: int, n: int) -> np.ndarray | None:
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


def _into_producer(graph, index, p: onnx.NodeProto, s, t) -> str | None:
    """Fold s, t into producer p. Returns None on success, else why not."""
    w = index.const(p.input[1])
    if w is None:
        return f"{p.op_type} weights are not constants"
    dtype, w64 = w.dtype, w.astype(np.float64)
    if p.op_type == "Conv":
        bias = _bias(graph, index, p, 2, w.shape[0])
        w64 = w64 * s.reshape(-1, *[1] * (w.ndim - 1))
    elif p.op_type == "ConvTranspose":
        g = attr(p, "group", 1)
        cin, cout_g = w.shape[0], w.shape[1]
        bias = _bias(graph, index, p, 2, g * cout_g)
        scale = s.reshape(g, 1, cout_g, *[1] * (w.ndim - 2))
        w64 = (w64.reshape(g, cin // g, cout_g, *w.shape[2:]) * scale).reshape(w.shape)
    elif p.op_type == "Gemm":
        if attr(p, "transB", 0):
            w64 = w64 * s[:, None]
        else:
            w64 = w64 * s[None, :]
        bias = _bias(graph, index, p, 2, len(s))
        if bias is not None:
            bias = bias * attr(p, "beta", 1.0)
            set_attr(p, "beta", 1.0)
    else:  # MatMul with a 2-D constant right operand becomes Gemm
        if w.ndim != 2:
            return "MatMul weight is not 2-D"
        w64, bias = w64 * s[None, :], np.zeros(len(s))
        p.op_type = "Gemm"
    if bias is None:
        return f"{p.op_type} bias is not a constant"
    _write(graph, p, 1, "w", w64, dtype)
    _write(graph, p, 2, "b", bias * s + t, dtype)
    return None


def _into_consumer(graph, index, conv: onnx.NodeProto, s, t) -> str | None:
    if any(attr(conv, "pads", [])) or attr(conv, "auto_pad", b"NOTSET") not in (
            b"NOTSET", b"VALID"):
        return "the following Conv pads with zeros (folding would change its border)"
    w = index.const(conv.input[1])
    if w is None:
        return "Conv weights are not constants"
    g = attr(conv, "group", 1)
    cout, cin_g = w.shape[:2]
    # s_oc[o, ci] = s[c] for input channel c = group(o) * cin_g + ci
    s_oc = s.reshape(g, cin_g)[np.arange(cout) // (cout // g)]
    t_oc = t.reshape(g, cin_g)[np.arange(cout) // (cout // g)]
    bias = _bias(graph, index, conv, 2, cout)
    if bias is None:
        return "Conv bias is not a constant"
    w64 = w.astype(np.float64)
    spatial = (1,) * (w.ndim - 2)
    extra = (w64 * t_oc.reshape(cout, cin_g, *spatial)).reshape(cout, -1).sum(1)
    _write(graph, conv, 1, "w", w64 * s_oc.reshape(cout, cin_g, *spatial), w.dtype)
    _write(graph, conv, 2, "b", bias + extra, w.dtype)
    return None


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


def fold_batchnorm(model: onnx.ModelProto) -> tuple[onnx.ModelProto, PassReport]:
    report = PassReport("fold_batchnorm")
    model = onnx.shape_inference.infer_shapes(model)
    graph = model.graph
    for bn in [n for n in graph.node if n.op_type == "BatchNormalization"]:
        index = GraphIndex(graph)
        name = bn.name or bn.output[0]
        if attr(bn, "training_mode", 0) or any(index.uses(o) for o in bn.output[1:] if o):
            report.decline(name, "training mode or running statistics used")
            continue
        affine = _affine(bn, index)
        if affine is None:
            report.decline(name, "BatchNorm parameters are not constants")
            continue
        s, t = affine
        dtype = index.const(bn.input[1]).dtype
        producer = index.producer.get(bn.input[0])
        users = index.consumers.get(bn.output[0], [])
        why = "no Conv, ConvTranspose, Gemm or MatMul next to it"
        if producer is not None and producer.op_type in _FOLD_INTO:
            if index.uses(bn.input[0]) != 1:
                why = f"{producer.op_type} output has other consumers"
            elif producer.op_type == "MatMul" and _rank(model, bn.input[0]) != 2:
                why = "MatMul output is not 2-D"
            else:
                why = _into_producer(graph, index, producer, s, t)
                if why is None:
                    producer.output[0] = bn.output[0]
                    graph.node.remove(bn)
                    report.count(f"{producer.op_type.lower()}+bn")
                    continue
        if (len(users) == 1 and index.uses(bn.output[0]) == 1 and users[0].op_type == "Conv"
                and users[0].input[0] == bn.output[0]):
            why_after = _into_consumer(graph, index, users[0], s, t)
            if why_after is None:
                users[0].input[0] = bn.input[0]
                graph.node.remove(bn)
                report.count("bn+conv")
                continue
            why = f"{why}; {why_after}"
        if _scale_shift(model, bn, s, t, dtype):
            report.count("bn->scale_shift")
            report.decline(name, f"became Mul+Add: {why}")
        else:
            report.decline(name, f"{why}; input rank unknown, left as is")
    if report.changed:
        for what, n in drop_dead(graph).items():
            report.count(what, n)
        del graph.value_info[:]
        model = onnx.shape_inference.infer_shapes(model)
    return model, report
