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
from .graph import GraphIndex, attr, bypass, bypass_reason, drop_dead, set_attr
from .report import PassReport
from .rules import Rule, apply_rules


def _noop_rule(graph: onnx.GraphProto, shapes: dict) -> Rule:
    def match(node, index) -> bool:
        return node.op_type in ("Identity", "Dropout") or (
            node.op_type == "Reshape" and node.input[0] in shapes and node.output[0] in shapes
            and shapes[node.input[0]] == shapes[node.output[0]])

    def check(node, index) -> str | None:
        if node.op_type == "Dropout" and len(node.output) > 1 and node.output[1] \
                and index.uses(node.output[1]):
            return "Dropout mask is used"
        return bypass_reason(index, node)

    def rewrite(node, index) -> str:
        bypass(graph, node)
        return f"{node.op_type.lower()} removed"

    return Rule("no-op removed", match, check, rewrite)


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


def _pad_rule(graph: onnx.GraphProto, shapes: dict) -> Rule:
    def user(node, index) -> onnx.NodeProto:
        return index.consumers[node.output[0]][0]

    def match(node, index) -> bool:
        users = index.consumers.get(node.output[0], []) if node.op_type == "Pad" else []
        return (len(users) == 1 and index.uses(node.output[0]) == 1
                and users[0].op_type in ("Conv", "AveragePool")
                and users[0].input[0] == node.output[0])

    def check(node, index) -> str | None:
        amounts = _pad_amounts(node, index, len(shapes.get(node.input[0], [])))
        if isinstance(amounts, str):
            return amounts
        u = user(node, index)
        if attr(u, "auto_pad", b"NOTSET") not in (b"NOTSET", b"VALID"):
            return f"{u.op_type} uses auto_pad SAME"
        if u.op_type == "AveragePool" and any(attr(u, "pads", [])) \
                and not attr(u, "count_include_pad", 0):
            return "AveragePool excludes its own pads from the mean"
        return None

    def rewrite(node, index) -> str:
        u, rank = user(node, index), len(shapes[node.input[0]])
        amounts, nd = _pad_amounts(node, index, rank), rank - 2
        own = list(attr(u, "pads", [0] * 2 * nd))
        begin, end = amounts[2:rank], amounts[rank + 2:]
        set_attr(u, "pads", [int(own[i] + begin[i]) for i in range(nd)]
                 + [int(own[nd + i] + end[i]) for i in range(nd)])
        if u.op_type == "AveragePool":
            set_attr(u, "count_include_pad", 1)
        if attr(u, "auto_pad", b"NOTSET") == b"VALID":
            set_attr(u, "auto_pad")
        u.input[0] = node.input[0]
        graph.node.remove(node)
        return f"pad->{u.op_type.lower()}"

    return Rule("pad fused", match, check, rewrite)


def _transpose_rule(graph: onnx.GraphProto) -> Rule:
    """Transpose(p1) -> Transpose(p2) composing to the identity (the match is the pattern)."""
    def match(node, index) -> bool:
        users = index.consumers.get(node.output[0], [])
        if node.op_type != "Transpose" or index.uses(node.output[0]) != 1 or not users \
                or users[0].op_type != "Transpose":
            return False
        p1, p2 = attr(node, "perm", None), attr(users[0], "perm", None)
        return p1 is not None and p2 is not None and [p1[i] for i in p2] == list(range(len(p1)))

    def rewrite(first, index) -> str:
        second = index.consumers[first.output[0]][0]
        identity = helper.make_node("Identity", [first.input[0]], [second.output[0]])
        graph.node.insert(list(graph.node).index(second), identity)
        graph.node.remove(second)
        graph.node.remove(first)
        return ("transpose pair removed" if bypass(graph, identity) is None
                else "transpose pair -> identity")

    return Rule("transpose pair", match, lambda n, i: None, rewrite)


def cleanup(model: onnx.ModelProto) -> tuple[onnx.ModelProto, PassReport]:
    report = PassReport("cleanup")
    model, folded = fold_constants(model)
    for op, n in folded.rewrites.items():
        report.count(f"{op.lower()} folded", n)
    graph = model.graph
    shapes = static_shapes(model)
    for rule, ops in ((_noop_rule(graph, shapes), ("Identity", "Dropout", "Reshape")),
                      (_pad_rule(graph, shapes), ("Pad",)),
                      (_transpose_rule(graph), ("Transpose",))):
        apply_rules(graph, [rule], report, anchors=lambda n, ops=ops: n.op_type in ops)
    for what, n in drop_dead(graph).items():
        report.count(what, n)
    if report.changed:
        del graph.value_info[:]
        model = onnx.shape_inference.infer_shapes(model)
    return model, report
