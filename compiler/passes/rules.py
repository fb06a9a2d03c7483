"""Rewrite rules and the loop that applies them: match -> check -> rewrite.

A rule names one pattern. `match(node, index)` says whether the node anchors the pattern at
all (an op type, an attribute); `check(node, index)` returns None where the rewrite applies,
else the reason it does not (the report keeps it: a declined match always says why);
`rewrite(node, index)` performs it. This is onnxscript's rewriter shape, for passes that walk
a graph node by node.

`apply_rules` tries a node's matching rules in order; the first whose check passes rewrites,
and the reasons of those before it are reported only where that rule is a `fallback` (an
exact but lesser rewrite, e.g. BatchNorm as Mul + Add where it could fold into nothing).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import onnx

from .graph import GraphIndex
from .report import PassReport


@dataclass(frozen=True)
class Rule:
    name: str  # what the report counts a rewrite as
    match: Callable[[onnx.NodeProto, GraphIndex], bool]
    check: Callable[[onnx.NodeProto, GraphIndex], str | None]
    # performs the rewrite; may return the name to count it under (e.g. "conv+bn")
    rewrite: Callable[[onnx.NodeProto, GraphIndex], str | None]
    fallback: str = ""  # a lesser rewrite, described so: reports why the rules before declined


def apply_rules(graph: onnx.GraphProto, rules: list[Rule], report: PassReport,
                anchors: Callable[[onnx.NodeProto], bool] = lambda n: True) -> None:
    """Apply `rules` to each anchor node of `graph` (nodes as they stood before any rewrite).
    The index is rebuilt after each rewrite, so a rule sees the graph the previous ones left.
    A node is named in the report by its name, else its op type."""
    index = GraphIndex(graph)
    for node in [n for n in graph.node if anchors(n)]:
        if not any(node is n for n in graph.node):
            continue  # removed by an earlier rewrite
        name, why = node.name or node.op_type, []
        for rule in rules:
            if not rule.match(node, index):
                continue
            reason = rule.check(node, index)
            if reason is not None:
                if reason not in why:  # rules sharing a precondition decline alike
                    why.append(reason)
                continue
            report.count(rule.rewrite(node, index) or rule.name)
            index = GraphIndex(graph)
            if rule.fallback and why:
                report.decline(name, f"became {rule.fallback}: {'; '.join(why)}")
            why = []
            break
        if why:
            report.decline(name, "; ".join(why))
