"""cleanup: remove what does nothing at inference, exactly.

Patterns and why each rewrite is exact:
- Dropout (mask unused) and Identity: y = x at inference; consumers read x instead.
- Constant and Shape chains on static shapes: evaluated (see fold_constants).
- Pad(constant 0, spatial dims only) -> Conv: conv over an explicitly zero-padded input equals
  conv with those pads added to its own `pads`. Same for AveragePool when the pool counts pad
  cells (count_include_pad=1, or it had no pads of its own): the zeros enter the mean either way.
  MaxPool is not fused: its implicit padding is -inf, not 0.
- Transpose(p1) -> Transpose(p2) with p2[p1] = identity: the pair is the identity.
- Reshape whose output shape equals its input shape: y = x.
- Finally, what nothing reads is dropped: nodes (Constant nodes among them) none of whose
  outputs is read, then initializers no node, graph output or subgraph (If/Loop/Scan body
  reading an outer name) reads. An initializer that is also a graph input is an overridable
  input and stays. Counted as "dead ... removed".
Declines: a Pad with a non-zero value, a non-constant mode or pads, pads on batch/channel dims
or negative pads; a first Transpose or Pad whose output has other consumers.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import helper

from .fold_constants import fold_constants, static_shapes
from .graph import GraphIndex, attr, bypass, drop_dead, set_attr
from .report import PassReport


def _drop_noops(graph: onnx.GraphProto, shapes, report: PassReport) -> None:
    for node in list(graph.node):
        index = GraphIndex(graph)
        op = node.op_type
        if op == "Dropout" and len(node.output) > 1 and node.output[1] and index.uses(
                node.output[1]):
            report.decline(node.name or op, "Dropout mask is used")
            continue
        noop = op in ("Identity", "Dropout") or (
            op == "Reshape" and node.input[0] in shapes and node.output[0] in shapes
            and shapes[node.input[0]] == shapes[node.output[0]])
        if noop:
            why = bypass(graph, node)
            if why is None:
                report.count(f"{op.lower()} removed")
            else:
                report.decline(node.name or op, why)


def _pad_amounts(pad: onnx.NodeProto, index: GraphIndex, rank: int) -> list[int] | str:
    mode = attr(pad, "mode", b"constant")
    if mode != b"constant":
        return f"mode {mode.decode()}"
    if len(pad.input) > 1:  # opset >= 11: pads and value are inputs
        pads = index.const(pad.input[1])
        value = index.const(pad.input[2]) if len(pad.input) > 2 and pad.input[2] else 0
        if len(pad.input) > 3 and pad.input[3]:
            return "axes input"
    else:
        pads, value = attr(pad, "pads", None), attr(pad, "value", 0.0)
    if pads is None or value is None:
        return "pads or value not constant"
    pads = [int(p) for p in np.asarray(pads).reshape(-1)]
    if float(np.asarray(value)) != 0.0:
        return "non-zero pad value"
    if len(pads) != 2 * rank or any(p < 0 for p in pads):
        return "negative or partial pads"
    if pads[0] or pads[1] or pads[rank] or pads[rank + 1]:
        return "pads batch or channel dims"
    return pads


def _fuse_pads(graph: onnx.GraphProto, shapes, report: PassReport) -> None:
    for pad in [n for n in graph.node if n.op_type == "Pad"]:
        index = GraphIndex(graph)
        users = index.consumers.get(pad.output[0], [])
        if len(users) != 1 or index.uses(pad.output[0]) != 1:
            continue
        user = users[0]
        if user.op_type not in ("Conv", "AveragePool") or user.input[0] != pad.output[0]:
            continue
        rank = len(shapes.get(pad.input[0], []))
        amounts = _pad_amounts(pad, index, rank)
        if isinstance(amounts, str):
            report.decline(pad.name or "Pad", amounts)
            continue
        if attr(user, "auto_pad", b"NOTSET") not in (b"NOTSET", b"VALID"):
            report.decline(pad.name or "Pad", f"{user.op_type} uses auto_pad SAME")
            continue
        nd = rank - 2
        own = list(attr(user, "pads", [0] * 2 * nd))
        if user.op_type == "AveragePool" and any(own) and not attr(user, "count_include_pad", 0):
            report.decline(pad.name or "Pad", "AveragePool excludes its own pads from the mean")
            continue
        begin, end = amounts[2:rank], amounts[rank + 2:]
        set_attr(user, "pads", [int(own[i] + begin[i]) for i in range(nd)]
                 + [int(own[nd + i] + end[i]) for i in range(nd)])
        if user.op_type == "AveragePool":
            set_attr(user, "count_include_pad", 1)
        if attr(user, "auto_pad", b"NOTSET") == b"VALID":
            set_attr(user, "auto_pad")
        user.input[0] = pad.input[0]
        graph.node.remove(pad)
        report.count(f"pad->{user.op_type.lower()}")


def _cancel_transposes(graph: onnx.GraphProto, report: PassReport) -> None:
    for first in [n for n in graph.node if n.op_type == "Transpose"]:
        index = GraphIndex(graph)
        if first not in graph.node or index.uses(first.output[0]) != 1:
            continue
        users = index.consumers.get(first.output[0], [])
        if not users or users[0].op_type != "Transpose":
            continue
        second = users[0]
        p1, p2 = attr(first, "perm", None), attr(second, "perm", None)
        if p1 is None or p2 is None or [p1[i] for i in p2] != list(range(len(p1))):
            continue
        identity = helper.make_node("Identity", [first.input[0]], [second.output[0]])
        graph.node.insert(list(graph.node).index(second), identity)
        graph.node.remove(second)
        graph.node.remove(first)
        if bypass(graph, identity) is None:
            report.count("transpose pair removed")
        else:
            report.count("transpose pair -> identity")


def cleanup(model: onnx.ModelProto) -> tuple[onnx.ModelProto, PassReport]:
    report = PassReport("cleanup")
    model, folded = fold_constants(model)
    for op, n in folded.rewrites.items():
        report.count(f"{op.lower()} folded", n)
    graph = model.graph
    shapes = static_shapes(model)
    _drop_noops(graph, shapes, report)
    _fuse_pads(graph, shapes, report)
    _cancel_transposes(graph, report)
    for what, n in drop_dead(graph).items():
        report.count(what, n)
    if report.changed:
        del graph.value_info[:]
        model = onnx.shape_inference.infer_shapes(model)
    return model, report
