"""Write the QDQ form of a model: QuantizeLinear → DequantizeLinear around what runs in int8.

For each tensor t a chosen layer reads or writes (layers.Layer.tensors), with its scale s and
zero point z: `t → QuantizeLinear(s, z) → DequantizeLinear(s, z) → t_dequantized`, and every
reader of t reads t_dequantized instead. For each chosen layer's weights W (per output
channel k, symmetric): the int8 initializer Wq = clip(round(W / s_k), -127, 127) and a
DequantizeLinear with the scales along the output-channel axis. The bias b becomes int32 at
the product scale of its input and weights, bq = round(b / (s_x · s_k)), dequantized the same
way: the form onnxruntime's QDQ fusion runs as QLinearConv/QGemm, and edgec's int8 lowering as
an int32-accumulating conv.

Bias correction: rounding the weights shifts each output's mean by
E[(Wdq - W) · x] = Σ (Wdq - W)[k, c, ...] · E[x_c] (the input's per-channel mean on the
calibration data, over the kernel window; padding taken as the mean too). That shift is
subtracted from the bias before it is quantized (a layer without a bias gets one); MatMul has no
bias input and is left uncorrected.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from ..passes.graph import GraphIndex, attr
from .layers import Layer
from .ranges import quantize_weight, weight_scales

ONNX_DTYPE = {"uint8": TensorProto.UINT8, "int8": TensorProto.INT8}
NP_DTYPE = {"uint8": np.uint8, "int8": np.int8}
INT32_MAX = 2**31 - 1


@dataclass(frozen=True)
class TensorQuant:
    scale: float
    zero: int
    dtype: str  # uint8 | int8


def _weight_shift(node: onnx.NodeProto, err: np.ndarray, mean: np.ndarray) -> np.ndarray:
    """E[(Wdq - W) · x] per output channel, x's per-channel mean `mean`."""
    if node.op_type == "Conv":
        groups = attr(node, "group", 1)
        n, cg = err.shape[:2]
        per_out = err.reshape(groups, n // groups, cg, -1).sum(-1)  # [g, N/g, C/g]
        return np.einsum("gnc,gc->gn", per_out, mean.reshape(groups, cg)).reshape(n)
    if node.op_type == "Gemm" and attr(node, "transB", 0):
        return err @ mean
    return mean @ err


def _quantize_layer(graph: onnx.GraphProto, index: GraphIndex, node: onnx.NodeProto,
                    layer: Layer, input_scale: float, mean: np.ndarray | None,
                    out: list[onnx.NodeProto]) -> None:
    w = index.const(layer.weight)
    scales = weight_scales(w, layer.axis)
    wq = quantize_weight(w, scales, layer.axis)
    base = node.name
    graph.initializer.extend([numpy_helper.from_array(wq, f"{base}.weight_quantized"),
                              numpy_helper.from_array(scales, f"{base}.weight_scale"),
                              numpy_helper.from_array(np.zeros(len(scales), np.int8),
                                                      f"{base}.weight_zero_point")])
    out.append(helper.make_node("DequantizeLinear", [f"{base}.weight_quantized",
                                f"{base}.weight_scale", f"{base}.weight_zero_point"],
                                [f"{base}.weight_dequantized"], axis=layer.axis,
                                name=f"{base}.weight_dq"))
    node.input[1] = f"{base}.weight_dequantized"
    if node.op_type == "MatMul":
        return
    has_bias = len(node.input) > 2 and node.input[2]
    bias = index.const(node.input[2]).reshape(-1) if has_bias else np.zeros(len(scales))
    if mean is not None:
        shape = [1] * w.ndim
        shape[layer.axis] = -1
        bias = bias - _weight_shift(node, wq * scales.reshape(shape) - w, mean)
    bscale = (input_scale * scales).astype(np.float32)
    bq = np.clip(np.round(bias / bscale), -INT32_MAX, INT32_MAX).astype(np.int32)
    graph.initializer.extend([numpy_helper.from_array(bq, f"{base}.bias_quantized"),
                              numpy_helper.from_array(bscale, f"{base}.bias_scale")])
    out.append(helper.make_node("DequantizeLinear", [f"{base}.bias_quantized",
                                f"{base}.bias_scale"], [f"{base}.bias_dequantized"], axis=0,
                                name=f"{base}.bias_dq"))
    if has_bias:
        node.input[2] = f"{base}.bias_dequantized"
    else:
        node.input.append(f"{base}.bias_dequantized")


def _qdq_pair(graph: onnx.GraphProto, t: str, q: TensorQuant) -> list[onnx.NodeProto]:
    graph.initializer.extend([numpy_helper.from_array(np.float32(q.scale), f"{t}_scale"),
                              numpy_helper.from_array(NP_DTYPE[q.dtype](q.zero),
                                                      f"{t}_zero_point")])
    return [helper.make_node("QuantizeLinear", [t, f"{t}_scale", f"{t}_zero_point"],
                             [f"{t}_quantized"], name=f"{t}_QuantizeLinear"),
            helper.make_node("DequantizeLinear", [f"{t}_quantized", f"{t}_scale",
                             f"{t}_zero_point"], [f"{t}_dequantized"],
                             name=f"{t}_DequantizeLinear")]


def build(model: onnx.ModelProto, layers: list[Layer], quant: dict[str, TensorQuant],
          means: dict[str, np.ndarray] | None = None) -> onnx.ModelProto:
    """`model` with `layers` in QDQ form (the rest stays fp32); `quant` holds every tensor the
    layers read or write, `means` the inputs' per-channel means (None: no bias correction)."""
    out = onnx.ModelProto.FromString(model.SerializeToString())
    graph, index = out.graph, GraphIndex(out.graph)
    by_name = {n.name: n for n in graph.node}
    tensors = list(dict.fromkeys(t for la in layers for t in la.tensors()))
    front: list[onnx.NodeProto] = []
    pairs = {t: _qdq_pair(graph, t, quant[t]) for t in tensors}
    for layer in layers:
        _quantize_layer(graph, index, by_name[layer.name], layer, quant[layer.act].scale,
                        None if means is None else means.get(layer.act), front)
    for n in graph.node:
        n.input[:] = [f"{i}_dequantized" if i in pairs else i for i in n.input]
    nodes = list(front)
    for t in (i.name for i in graph.input):
        nodes += pairs.get(t, [])
    for n in graph.node:
        nodes.append(n)
        for o in n.output:
            nodes += pairs.get(o, [])
    del graph.node[:]
    graph.node.extend(nodes)
    used = {i for n in graph.node for i in n.input}
    keep = [t for t in graph.initializer if t.name in used]
    del graph.initializer[:]
    graph.initializer.extend(keep)
    del graph.value_info[:]
    return out
