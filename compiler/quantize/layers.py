"""The nodes `edgec quantize` can run in int8, and the tensors their int8 form reads and writes.

A layer is a Conv (any groups) with constant weights and bias, a Gemm (alpha = beta = 1, no
transA) or a MatMul whose second input is a constant matrix. Its int8 form reads its first
input quantized per tensor, and its weights quantized symmetric per output channel (`axis`:
0 for Conv and a transB Gemm's [N, K], 1 for a [K, N] matrix). Its output is quantized where
it next becomes a tensor other nodes read: past the Relu, Clip or constant Min that are its
only readers, one after the other (the activations are then part of the int8 kernel's
epilogue), and not at all where that tensor is a graph output (the model's outputs stay fp32).
"""

from __future__ import annotations

from dataclasses import dataclass

import onnx

from ..passes.graph import GraphIndex, attr

ACTIVATIONS = ("Relu", "Clip")  # epilogues an int8 kernel applies before its output quantize


@dataclass(frozen=True)
class Layer:
    name: str  # the node's name
    op: str
    weight: str  # the constant weight's initializer
    axis: int  # the weight's output-channel axis
    act: str  # the input quantized per tensor
    out: str | None  # the tensor quantized after it; None: it feeds a graph output

    def tensors(self) -> list[str]:
        return [self.act] + ([self.out] if self.out else [])


def decline_reason(node: onnx.NodeProto, index: GraphIndex) -> str | None:
    """Why `node` (Conv, Gemm or MatMul) cannot run in int8, else None."""
    if len(node.input) < 2 or index.const(node.input[1]) is None:
        return "weights are not a constant"
    if len(node.input) > 2 and node.input[2] and index.const(node.input[2]) is None:
        return "bias is not a constant"
    if index.const(node.input[0]) is not None:
        return "its input is a constant"
    w = index.const(node.input[1])
    if node.op_type == "Gemm":
        if attr(node, "alpha", 1.0) != 1.0 or attr(node, "beta", 1.0) != 1.0:
            return "Gemm with alpha or beta other than 1"
        if attr(node, "transA", 0):
            return "Gemm with transA"
        if len(node.input) > 2 and node.input[2] and index.const(node.input[2]).ndim > 1 \
                and index.const(node.input[2]).shape[0] != 1:
            return "Gemm bias is not one value per output"
    if node.op_type == "MatMul" and w.ndim != 2:
        return f"MatMul weights of rank {w.ndim}, not a matrix"
    return None


def _axis(node: onnx.NodeProto) -> int:
    if node.op_type == "Conv" or (node.op_type == "Gemm" and attr(node, "transB", 0)):
        return 0
    return 1


def _quantized_output(node: onnx.NodeProto, index: GraphIndex) -> str | None:
    out = node.output[0]
    while out not in index.outputs:
        readers = index.consumers.get(out, [])
        if len(readers) != 1 or not _epilogue(readers[0], index):
            break
        out = readers[0].output[0]
    return None if out in index.outputs else out


def _epilogue(node: onnx.NodeProto, index: GraphIndex) -> bool:
    """Whether `node` is an activation the int8 kernel applies before its output quantize."""
    if node.op_type == "Min":  # a per-channel bound (equalize.py's form of a ReLU6)
        return len(node.input) == 2 and index.const(node.input[1]) is not None
    return node.op_type in ACTIVATIONS


def find_layers(model: onnx.ModelProto) -> tuple[list[Layer], list[str]]:
    """The layers of `model` (named nodes, graph order) and the candidates declined, each with
    its reason."""
    index = GraphIndex(model.graph)
    layers, declined = [], []
    for node in model.graph.node:
        if node.op_type not in ("Conv", "Gemm", "MatMul"):
            continue
        why = decline_reason(node, index)
        if why:
            declined.append(f"{node.name}: {why}")
            continue
        layers.append(Layer(node.name, node.op_type, node.input[1], _axis(node),
                            node.input[0], _quantized_output(node, index)))
    return layers, declined
