"""A small ONNX graph builder for the reference models.

It emits graphs in the shape real exporters (torch.onnx, paddle2onnx, tf2onnx) produce: Conv with
bias, then a separate BatchNormalization, an activation node, Flatten + Gemm heads, Dropout left in.
Weights are seeded: He-normal for convs and dense layers (so activations keep their scale through
deep nets and a relative tolerance stays meaningful), BatchNorm statistics drawn near 1 and 0.
Shapes are tracked as the graph grows, so each layer only names its output channels.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

OPSET = 17
IR_VERSION = 8


def _out(size: int, k: int, s: int, p0: int, p1: int, d: int = 1, ceil: bool = False) -> int:
    span = size + p0 + p1 - d * (k - 1) - 1
    return (-(-span // s) if ceil else span // s) + 1


class GraphBuilder:
    def __init__(self, name: str, input_shape: list[int], seed: int = 0, input_name: str = "input"):
        self.name = name
        self.rng = np.random.default_rng(seed)
        self.nodes: list[onnx.NodeProto] = []
        self.inits: list[onnx.TensorProto] = []
        self.shapes: dict[str, list[int]] = {input_name: list(input_shape)}
        self.input_name = input_name
        self._count: dict[str, int] = {}

    # -- bookkeeping -------------------------------------------------------------------------
    def node_name(self, op: str) -> str:
        n = self._count.get(op, 0) + 1
        self._count[op] = n
        return f"{op.lower()}_{n}"

    def _node(self, op: str, inputs: list[str], shape: list[int], **attrs) -> str:
        name = self.node_name(op)
        out = f"{name}_out"
        self.nodes.append(helper.make_node(op, inputs, [out], name=name, **attrs))
        self.shapes[out] = shape
        return out

    def const(self, name: str, value: np.ndarray) -> str:
        full = f"{name}_{len(self.inits)}"
        self.inits.append(numpy_helper.from_array(np.asarray(value), full))
        return full

    # -- layers ------------------------------------------------------------------------------
    def conv(self, x: str, cout: int, k, stride=1, pad=0, groups: int = 1, dilation=1,
             bias: bool = True) -> str:
        shape = self.shapes[x]
        nd = len(shape) - 2
        ks, ss, ds = (_tup(v, nd) for v in (k, stride, dilation))
        ps = _tup(pad, nd)
        cin = shape[1]
        fan_in = cin // groups * int(np.prod(ks))
        w = self.rng.standard_normal((cout, cin // groups, *ks)) * np.sqrt(2.0 / fan_in)
        inputs = [x, self.const("w", w.astype(np.float32))]
        if bias:
            b = 0.1 * self.rng.standard_normal(cout)
            inputs.append(self.const("b", b.astype(np.float32)))
        out_sp = [_out(shape[2 + i], ks[i], ss[i], ps[i], ps[i], ds[i]) for i in range(nd)]
        return self._node("Conv", inputs, [shape[0], cout, *out_sp], kernel_shape=list(ks),
                          strides=list(ss), pads=list(ps) * 2, dilations=list(ds), group=groups)

    def conv_transpose(self, x: str, cout: int, k: int, stride: int = 2, pad: int = 0,
                       output_padding: int = 0) -> str:
        shape = self.shapes[x]
        nd = len(shape) - 2
        cin = shape[1]
        w = self.rng.standard_normal((cin, cout, *[k] * nd)) * np.sqrt(2.0 / (cin * k**nd))
        b = 0.1 * self.rng.standard_normal(cout)
        out_sp = [(s - 1) * stride - 2 * pad + k + output_padding for s in shape[2:]]
        attrs = dict(kernel_shape=[k] * nd, strides=[stride] * nd, pads=[pad] * 2 * nd)
        if output_padding:
            attrs["output_padding"] = [output_padding] * nd
        return self._node("ConvTranspose", [x, self.const("w", w.astype(np.float32)),
                                            self.const("b", b.astype(np.float32))],
                          [shape[0], cout, *out_sp], **attrs)

    def bn(self, x: str) -> str:
        c = self.shapes[x][1]
        r = self.rng
        params = [r.uniform(0.5, 1.5, c), 0.1 * r.standard_normal(c),
                  0.1 * r.standard_normal(c), r.uniform(0.5, 1.5, c)]
        names = [self.const(n, p.astype(np.float32))
                 for n, p in zip(("gamma", "beta", "mean", "var"), params)]
        return self._node("BatchNormalization", [x, *names], self.shapes[x], epsilon=1e-5)

    def act(self, x: str, kind: str = "relu") -> str:
        shape = self.shapes[x]
        if kind == "relu":
            return self._node("Relu", [x], shape)
        if kind == "relu6":
            lo, hi = self.const("min", np.float32(0)), self.const("max", np.float32(6))
            return self._node("Clip", [x, lo, hi], shape)
        if kind == "hardswish":
            return self._node("HardSwish", [x], shape)
        if kind == "silu":
            return self._node("Mul", [x, self._node("Sigmoid", [x], shape)], shape)
        if kind in ("sigmoid", "tanh"):
            return self._node(kind.capitalize(), [x], shape)
        if kind == "hardsigmoid":
            return self._node("HardSigmoid", [x], shape, alpha=1.0 / 6, beta=0.5)
        raise ValueError(kind)

    def conv_bn(self, x: str, cout: int, k, stride=1, pad=None, groups=1, act: str | None = "relu",
                bias: bool = False) -> str:
        pad = (k // 2 if isinstance(k, int) else 0) if pad is None else pad
        y = self.bn(self.conv(x, cout, k, stride, pad, groups, bias=bias))
        return self.act(y, act) if act else y

    def pool(self, x: str, kind: str, k: int, stride: int, pad: int = 0, ceil: bool = False) -> str:
        shape = self.shapes[x]
        nd = len(shape) - 2
        out_sp = [_out(s, k, stride, pad, pad, 1, ceil) for s in shape[2:]]
        attrs = dict(kernel_shape=[k] * nd, strides=[stride] * nd, pads=[pad] * 2 * nd)
        if ceil:
            attrs["ceil_mode"] = 1
        op = {"max": "MaxPool", "avg": "AveragePool"}[kind]
        return self._node(op, [x], [shape[0], shape[1], *out_sp], **attrs)

    def global_pool(self, x: str, kind: str = "avg") -> str:
        shape = self.shapes[x]
        op = {"avg": "GlobalAveragePool", "max": "GlobalMaxPool"}[kind]
        return self._node(op, [x], shape[:2] + [1] * (len(shape) - 2))

    def add(self, a: str, b: str) -> str:
        return self._node("Add", [a, b], self.shapes[a])

    def mul(self, a: str, b: str) -> str:
        return self._node("Mul", [a, b], self.shapes[a])

    def concat(self, xs: list[str], axis: int = 1) -> str:
        shape = list(self.shapes[xs[0]])
        shape[axis] = sum(self.shapes[x][axis] for x in xs)
        return self._node("Concat", xs, shape, axis=axis)

    def flatten(self, x: str) -> str:
        shape = self.shapes[x]
        return self._node("Flatten", [x], [shape[0], int(np.prod(shape[1:]))], axis=1)

    def dropout(self, x: str, ratio: float = 0.5) -> str:
        return self._node("Dropout", [x, self.const("ratio", np.float32(ratio))], self.shapes[x])

    def gemm(self, x: str, units: int) -> str:
        n, fin = self.shapes[x]
        w = self.rng.standard_normal((units, fin)) * np.sqrt(2.0 / fin)
        b = 0.1 * self.rng.standard_normal(units)
        return self._node("Gemm", [x, self.const("w", w.astype(np.float32)),
                                   self.const("b", b.astype(np.float32))], [n, units], transB=1)

    def resize(self, x: str, scale: int) -> str:
        shape = self.shapes[x]
        scales = self.const("scales", np.array([1, 1] + [scale] * (len(shape) - 2), np.float32))
        out = shape[:2] + [s * scale for s in shape[2:]]
        return self._node("Resize", [x, "", scales], out, mode="nearest")

    def softmax(self, x: str) -> str:
        return self._node("Softmax", [x], self.shapes[x], axis=-1)

    def raw(self, op: str, inputs: list[str], shape: list[int], **attrs) -> str:
        return self._node(op, inputs, shape, **attrs)

    # -- output ------------------------------------------------------------------------------
    def build(self, output: str, output_name: str = "output") -> onnx.ModelProto:
        last = self.nodes[-1]
        if last.output[0] != output:
            raise ValueError("the model output must be the last node's output")
        last.output[0] = output_name
        self.shapes[output_name] = self.shapes[output]
        graph = helper.make_graph(
            self.nodes, self.name,
            [helper.make_tensor_value_info(self.input_name, TensorProto.FLOAT,
                                           self.shapes[self.input_name])],
            [helper.make_tensor_value_info(output_name, TensorProto.FLOAT,
                                           self.shapes[output_name])],
            self.inits,
        )
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)],
                                  producer_name="edgec.models")
        model.ir_version = IR_VERSION
        return model


def _tup(v, n: int) -> tuple[int, ...]:
    return tuple(v) if isinstance(v, (list, tuple)) else (v,) * n
