"""Per-node cost of an ONNX model: output shape, MACs, FLOPs, weights, biases, activation bytes.

Pure: reads a shape-inferred model (the frontend's output), never changes it, imports no TVM.

Conventions (printed with every table):
- 1 MAC = 2 FLOPs. Conv: MACs = out_elems * (C_in / groups) * prod(kernel); ConvTranspose:
  in_elems * (C_out / groups) * prod(kernel); Gemm/MatMul: M * N * K per batch.
- A bias add, an activation, an elementwise op: 1 FLOP per output element (HardSwish, SiLU and
  friends too: the cost of the op, not of its exact arithmetic). BatchNorm at inference: 2 FLOPs
  per element (scale and shift). Pooling: 1 FLOP per window element per output; global pooling
  1 per input element. Softmax: 3 per element (exp, sum, divide).
- Weight bytes: every initializer as stored (an int8 QDQ model's weights take 1 byte each).
- Params: weights and biases counted apart; BatchNorm has 2 x C params (gamma, beta), its running
  statistics are not trained and are not counted (as in the seeds' tables).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np
import onnx
from onnx import helper

from .passes.fold_constants import static_shapes

_ELEMENTWISE = {
    "Relu", "Clip", "HardSwish", "HardSigmoid", "Sigmoid", "Tanh", "LeakyRelu", "Elu", "Selu",
    "PRelu", "Add", "Sub", "Mul", "Div", "Pow", "Sqrt", "Exp", "Log", "Abs", "Neg", "Max", "Min",
    "Sum", "Mean", "Erf", "Gelu", "Softplus", "Mish", "Reciprocal", "Where", "Resize", "Upsample",
}


@dataclass
class NodeCost:
    name: str
    op: str
    output_shape: list[int]
    macs: int = 0
    flops: int = 0
    weights: int = 0
    biases: int = 0
    activation_bytes: int = 0

    @property
    def params(self) -> int:
        return self.weights + self.biases


@dataclass
class ModelCost:
    nodes: list[NodeCost] = field(default_factory=list)
    peak_activation_bytes: int = 0
    input_bytes: int = 0
    weight_bytes: int = 0  # the initializers' bytes as stored: int8 weights take 1 each

    def op_counts(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for n in self.nodes:
            counts[n.op] = counts.get(n.op, 0) + 1
        return dict(sorted(counts.items()))

    @property
    def macs(self) -> int:
        return sum(n.macs for n in self.nodes)

    @property
    def flops(self) -> int:
        return sum(n.flops for n in self.nodes)

    @property
    def params(self) -> int:
        return sum(n.params for n in self.nodes)

    def totals(self) -> dict[str, int]:
        return {"macs": self.macs, "flops": self.flops, "params": self.params,
                "weights": sum(n.weights for n in self.nodes),
                "biases": sum(n.biases for n in self.nodes), "nodes": len(self.nodes),
                "peak_activation_bytes": self.peak_activation_bytes,
                "weight_bytes": self.weight_bytes}

    def to_json(self) -> dict:
        return {"convention": "1 MAC = 2 FLOPs; bias, activation, pooling, elementwise counted "
                              "as their own FLOPs",
                "totals": self.totals(), "op_counts": self.op_counts(),
                "nodes": [asdict(n) | {"params": n.params} for n in self.nodes]}


def _attrs(node: onnx.NodeProto) -> dict:
    return {a.name: helper.get_attribute_value(a) for a in node.attribute}


def _numel(shape: list[int]) -> int:
    return int(np.prod(shape)) if shape else 1


def _cost(node, shapes, inits, out_shape) -> tuple[int, int, int, int]:
    """(macs, extra_flops, weights, biases) for one node."""
    op, a = node.op_type, _attrs(node)
    out = _numel(out_shape)
    ins = [shapes.get(i, []) for i in node.input]
    if op in ("Conv", "ConvTranspose"):
        w = ins[1]
        # The weight's dim 1 is already C_in / groups (Conv) or C_out / groups (ConvTranspose).
        kernel = _numel(w[2:])
        macs = (out if op == "Conv" else _numel(ins[0])) * w[1] * kernel
        bias = _numel(ins[2]) if len(ins) > 2 and node.input[2] else 0
        return macs, out if bias else 0, _numel(w), bias
    if op in ("Gemm", "MatMul"):
        a_shape, b_shape = ins[0], ins[1]
        k = a_shape[-2] if op == "Gemm" and a.get("transA", 0) else a_shape[-1]
        macs = out * k
        weights = _numel(b_shape) if node.input[1] in inits else 0
        bias = _numel(ins[2]) if op == "Gemm" and len(ins) > 2 and node.input[2] else 0
        return macs, out if bias else 0, weights, bias
    if op == "BatchNormalization":
        return 0, 2 * out, ins[1][0], ins[2][0]
    if op == "LpPool":  # |x|^p, sum, ^(1/p): 2 per window element
        return 0, 2 * out * _numel(a.get("kernel_shape", [])), 0, 0
    if op == "GlobalLpPool":
        return 0, 2 * _numel(ins[0]), 0, 0
    if op in ("MaxPool", "AveragePool"):
        return 0, out * _numel(a.get("kernel_shape", [])), 0, 0
    if op in ("GlobalAveragePool", "GlobalMaxPool", "ReduceMean", "ReduceSum",
              "ReduceMax", "ReduceL2"):
        return 0, _numel(ins[0]), 0, 0
    if op in ("Softmax", "LogSoftmax"):
        return 0, 3 * out, 0, 0
    if op in _ELEMENTWISE:
        return 0, out, 0, 0
    return 0, 0, 0, 0


def analyze(model: onnx.ModelProto) -> ModelCost:
    """Cost of every node of a model whose shapes are static (see the frontend)."""
    shapes = static_shapes(model)
    if any(o not in shapes for n in model.graph.node for o in n.output if o):
        model = onnx.shape_inference.infer_shapes(model)
        shapes = static_shapes(model)
    elem = {vi.name: vi.type.tensor_type.elem_type
            for vi in [*model.graph.value_info, *model.graph.output]}
    inits = {t.name for t in model.graph.initializer}
    cost = ModelCost()
    for i, node in enumerate(model.graph.node):
        out_shape = shapes.get(node.output[0], [])
        macs, extra, weights, biases = _cost(node, shapes, inits, out_shape)
        itemsize = (helper.tensor_dtype_to_np_dtype(elem[node.output[0]]).itemsize
                    if elem.get(node.output[0]) else 4)
        cost.nodes.append(NodeCost(
            name=node.name or f"{node.op_type}_{i}", op=node.op_type, output_shape=out_shape,
            macs=int(macs), flops=int(2 * macs + extra), weights=int(weights), biases=int(biases),
            activation_bytes=_numel(out_shape) * itemsize,
        ))
    cost.peak_activation_bytes, cost.input_bytes = _peak_memory(model, elem, shapes)
    cost.weight_bytes = weight_bytes(model)
    return cost


def weight_bytes(model: onnx.ModelProto) -> int:
    """The bytes of every initializer as stored (an int8 weight takes one)."""
    return sum(_numel(list(t.dims)) * helper.tensor_dtype_to_np_dtype(t.data_type).itemsize
               for t in model.graph.initializer)


def _peak_memory(model: onnx.ModelProto, elem: dict[str, int],
                 shapes: dict[str, list[int]]) -> tuple[int, int]:
    """Peak bytes of live activations when nodes run in graph order.

    A tensor is live from the node that makes it (graph inputs: from the start) to the last
    node that reads it (graph outputs: to the end); weights are not activations.
    """
    g = model.graph
    weights = {t.name for t in g.initializer}
    for vi in g.input:
        elem.setdefault(vi.name, vi.type.tensor_type.elem_type)

    def nbytes(name: str) -> int:
        dtype = elem.get(name) or onnx.TensorProto.FLOAT
        return _numel(shapes.get(name, [])) * helper.tensor_dtype_to_np_dtype(dtype).itemsize

    last_use = {o.name: len(g.node) for o in g.output}
    for i, node in enumerate(g.node):
        for name in node.input:
            if name and name not in weights:
                last_use[name] = max(last_use.get(name, i), i)
    inputs = [vi.name for vi in g.input if vi.name not in weights]
    live = {name: nbytes(name) for name in inputs}
    input_bytes = sum(live.values())
    peak = input_bytes
    for i, node in enumerate(g.node):
        for name in node.output:
            if name:
                live[name] = nbytes(name)
        peak = max(peak, sum(live.values()))
        for name in [n for n in live if last_use.get(n, -1) <= i]:
            del live[name]
    return peak, input_bytes
