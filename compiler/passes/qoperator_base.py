"""What the qoperator pass's rewrites share: the constants, element types and ranks a
QOperator node's check reads, the common checks, and `Emit`, which builds the node's QDQ
replacement and puts it where the node stood (qoperator.py states the definitions)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import onnx
from onnx import helper, numpy_helper

from .graph import GraphIndex, attr, set_const

MS = "com.microsoft"
# Ops whose output has the element type of their first input: a quantized tensor keeps its type
# through them, so the type of a missing zero point can be read past them.
_SAME_TYPE = {"Flatten", "Reshape", "MaxPool", "Transpose", "Squeeze", "Unsqueeze", "Identity",
              "Slice", "Split", "Gather", "Expand", "Resize", "DepthToSpace", "SpaceToDepth"}
_QTYPES = (np.int8, np.uint8)


class QContext:
    """The model under rewrite: its default-domain opset, constants (initializers and Constant
    nodes), element types and ranks (from the graph, inferred again when a name lacks them)."""

    def __init__(self, model: onnx.ModelProto):
        self.model = model
        self.graph = model.graph
        self.opset = next((o.version for o in model.opset_import
                           if o.domain in ("", "ai.onnx")), 0)

    def const(self, index: GraphIndex, name: str) -> np.ndarray | None:
        if not name:
            return None
        value = index.const(name)
        node = index.producer.get(name)
        if value is None and node is not None and node.op_type == "Constant":
            t = attr(node, "value")
            value = numpy_helper.to_array(t) if isinstance(t, onnx.TensorProto) else None
        return value

    def _info(self, name: str) -> onnx.ValueInfoProto | None:
        g = self.graph
        return next((vi for vi in [*g.input, *g.value_info, *g.output] if vi.name == name), None)

    def dtype(self, index: GraphIndex, name: str, depth: int = 0) -> np.dtype | None:
        """The element type of `name`: a constant's, a declared one, a QuantizeLinear's output
        (its zero point's type, uint8 without one), else read through type-keeping ops."""
        value = self.const(index, name)
        if value is not None:
            return value.dtype
        vi = self._info(name)
        if vi is not None and vi.type.tensor_type.elem_type:
            return helper.tensor_dtype_to_np_dtype(vi.type.tensor_type.elem_type)
        node = index.producer.get(name)
        if node is None or depth > 16:
            return None
        if node.op_type == "QuantizeLinear" and node.domain in ("", "ai.onnx"):
            zp = node.input[2] if len(node.input) > 2 else ""
            return self.dtype(index, zp, depth + 1) if zp else np.dtype(np.uint8)
        if node.op_type in _SAME_TYPE and node.domain in ("", "ai.onnx"):
            return self.dtype(index, node.input[0], depth + 1)
        vi = self._inferred(name)
        if vi is not None and vi.type.tensor_type.elem_type:
            return helper.tensor_dtype_to_np_dtype(vi.type.tensor_type.elem_type)
        return None

    def _inferred(self, name: str) -> onnx.ValueInfoProto | None:
        """`name`'s type and shape as onnx infers them on the graph as it stands (kept in the
        graph's value_info), or None."""
        try:
            inferred = onnx.shape_inference.infer_shapes(self.model)
        except Exception:  # a graph onnx cannot infer: nothing is known
            return None
        vi = next((v for v in inferred.graph.value_info if v.name == name), None)
        if vi is not None:
            self.graph.value_info.append(vi)
        return vi

    def rank(self, index: GraphIndex, name: str) -> int | None:
        value = self.const(index, name)
        if value is not None:
            return value.ndim
        vi = self._info(name)
        if vi is None or not vi.type.tensor_type.HasField("shape"):
            vi = self._inferred(name)
        if vi is None or not vi.type.tensor_type.HasField("shape"):
            return None
        return len(vi.type.tensor_type.shape.dim)


@dataclass(frozen=True)
class QOp:
    """One QOperator op: its check (None, else why not) and its rewrite into `Emit`."""

    domain: str
    op_type: str
    check: Callable[[onnx.NodeProto, GraphIndex, QContext], str | None]
    rewrite: Callable[[onnx.NodeProto, GraphIndex, QContext, Emit], None]


def arg(node: onnx.NodeProto, i: int) -> str:
    """Input `i` of `node`, "" where absent."""
    return node.input[i] if len(node.input) > i else ""


def constants_reason(node: onnx.NodeProto, index: GraphIndex, ctx: QContext,
                     positions: Sequence[int], required: Sequence[int] = ()) -> str | None:
    """Why the scales and zero points at `positions` do not serve (None: all present ones are
    constants, zero points int8/uint8, scales float32 and positive; `required` ones present)."""
    for i in positions:
        name = arg(node, i)
        if not name:
            if i in required:
                return f"input {i} is missing"
            continue
        value = ctx.const(index, name)
        if value is None:
            return f"'{name}' is not a constant"
        if value.dtype == np.float32:
            if not np.all(np.isfinite(value) & (value > 0)):
                return f"scale '{name}' is not finite and positive"
        elif value.dtype not in _QTYPES:
            return f"'{name}' is {value.dtype}, not int8/uint8 or a float32 scale"
    return None


def scalar_reason(index: GraphIndex, ctx: QContext, node: onnx.NodeProto,
                  positions: Sequence[int]) -> str | None:
    """Why a present scale or zero point at `positions` is not per-tensor (one value)."""
    for i in positions:
        value = ctx.const(index, arg(node, i))
        if value is not None and value.size != 1:
            return f"'{arg(node, i)}' holds {value.size} values (only per-tensor is defined here)"
    return None


def first(*checks: Callable[[], str | None]) -> str | None:
    """The first reason any of `checks` gives, else None."""
    return next((why for check in checks if (why := check()) is not None), None)


class Emit:
    """The nodes and constants that replace one node; `commit` puts the nodes where it stood."""

    def __init__(self, graph: onnx.GraphProto, node: onnx.NodeProto, ctx: QContext,
                 index: GraphIndex):
        self.graph, self.node, self.ctx, self.index = graph, node, ctx, index
        self.base = node.name or node.op_type
        self.nodes: list[onnx.NodeProto] = []
        self.taken = ({t.name for t in graph.initializer} | {i.name for i in graph.input}
                      | {o for n in graph.node for o in n.output}
                      | {n.name for n in graph.node})

    def name(self, what: str) -> str:
        name, k = f"{self.base}_{what}", 0
        while name in self.taken:
            k += 1
            name = f"{self.base}_{what}_{k}"
        self.taken.add(name)
        return name

    def const(self, what: str, value: np.ndarray) -> str:
        return set_const(self.graph, self.name(what), value)

    def op(self, op_type: str, inputs: Sequence[str], out: str | None = None, **attrs) -> str:
        out = out or self.name(op_type.lower())
        self.nodes.append(helper.make_node(op_type, list(inputs), [out],
                                           name=self.name(op_type), **attrs))
        return out

    def zero_point(self, data: str, zp: str) -> str:
        """`zp`, or where absent a zero of the data's quantized type (a check made sure it is
        known: qtype_reason)."""
        if zp:
            return zp
        return self.const("zero_point", np.zeros((), self.ctx.dtype(self.index, data)))

    def per_tensor(self, name: str) -> str:
        """A one-value scale or zero point as a scalar (a 1-D [1] one would be per-axis)."""
        value = self.ctx.const(self.index, name)
        if value is None or value.ndim == 0 or value.size != 1:
            return name
        return self.const("scalar", value.reshape(()))

    def dq(self, x: str, scale: str, zp: str, axis: int | None = None) -> str:
        """DequantizeLinear(x, scale, zp): per-tensor, or per-`axis` where the scale has more
        than one value (the zero point is then broadcast to the scale's length)."""
        s = self.ctx.const(self.index, scale)
        if axis is None or s.size == 1:
            return self.op("DequantizeLinear", [x, self.per_tensor(scale),
                                                self.per_tensor(self.zero_point(x, zp))])
        z = self.ctx.const(self.index, self.zero_point(x, zp)) if zp else None
        if z is None or z.shape != s.shape:
            dtype = z.dtype if z is not None else self.ctx.dtype(self.index, x)
            zero = np.zeros((), dtype) if z is None else z.reshape(-1)[0]
            zp = self.const("zero_points", np.full(s.shape, zero, dtype))
        return self.op("DequantizeLinear", [x, scale, zp], axis=axis)

    def q(self, x: str, scale: str, zp: str, data: str, out: str) -> str:
        """QuantizeLinear(x, scale, zp) into `out`; a missing zp is a zero of `data`'s type."""
        return self.op("QuantizeLinear", [x, self.per_tensor(scale),
                                          self.per_tensor(self.zero_point(data, zp))], out)

    def commit(self) -> None:
        nodes = list(self.graph.node)
        pos = next(i for i, n in enumerate(nodes) if n is self.node)
        self.graph.node.remove(self.node)
        for n in reversed(self.nodes):
            self.graph.node.insert(pos, n)


def qtype_reason(node: onnx.NodeProto, index: GraphIndex, ctx: QContext,
                 pairs: Sequence[tuple[int, int]]) -> str | None:
    """Why the quantized type behind a missing zero point is unknown: for each (data, zp)
    position pair whose zp is absent, the data's type must be known and int8/uint8."""
    for data, zp in pairs:
        if arg(node, zp):
            continue
        dtype = ctx.dtype(index, arg(node, data))
        if dtype is None or dtype not in _QTYPES:
            return f"zero point {zp} is absent and the type of '{arg(node, data)}' is unknown"
    return None
