"""integer_pow: Pow by a small integer constant as multiplications.

Pattern: Pow(x, c) with c a constant whose every element is the same integer n in 2..4 (GeM
pooling's p = 3, squared-error and L2 heads' p = 2).

Rewrite:  x^2 = x*x,  x^3 = (x*x)*x,  x^4 = (x*x)*(x*x)

Why: TVM lowers pow to libm's scalar powf, one call per element, which no vector unit runs
(GeM pooling's feature-map cube made a GeM head issue 1.5x onnxruntime's instructions on a
Cortex-A72); multiplies vectorize and fuse into the producing kernel. Each multiply rounds
once, so x^3 is within 2 ulp of powf's (for negative x as well, where the cube keeps its sign
exactly as pow does for an integer exponent). Part of the `cpu` pipeline's ONNX step, never of
the user's optimized model.

Declines (reason in the report): an exponent that is not a constant, not one value, not an
integer, or outside 2..4 (a fractional power needs exp and log: left to powf).
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import helper

from edgec.compiler.passes.graph import GraphIndex, replace_node, tidy, unique_name
from edgec.compiler.passes.report import PassReport

POWERS = (2, 3, 4)


def _exponent(node: onnx.NodeProto, index: GraphIndex) -> tuple[int | None, str]:
    """(n, '') for a Pow this pass takes, else (None, why not)."""
    c = index.const(node.input[1])
    if c is None:
        return None, "exponent is not a constant"
    values = np.unique(np.asarray(c, np.float64))
    if values.size != 1:
        return None, "exponent holds several values"
    n = float(values[0])
    if n != round(n) or int(n) not in POWERS:
        return None, f"exponent {n:g} is not one of {', '.join(map(str, POWERS))}"
    return int(n), ""


def _muls(graph: onnx.GraphProto, node: onnx.NodeProto, n: int) -> list[onnx.NodeProto]:
    x, y, name = node.input[0], node.output[0], node.name or node.output[0]
    if n == 2:
        return [helper.make_node("Mul", [x, x], [y], name=f"{name}_sq")]
    sq = unique_name(graph, f"{y}_sq")
    last = [x, sq] if n == 3 else [sq, sq]
    return [helper.make_node("Mul", [x, x], [sq], name=f"{name}_sq"),
            helper.make_node("Mul", [last[1], last[0]], [y], name=f"{name}_mul")]


def integer_pow(model: onnx.ModelProto) -> tuple[onnx.ModelProto, PassReport]:
    """Every Pow by 2, 3 or 4 as multiplications (module docstring)."""
    out = onnx.ModelProto()
    out.CopyFrom(model)
    graph = out.graph
    report = PassReport("integer_pow")
    for node in [n for n in graph.node if n.op_type == "Pow"]:
        n, why = _exponent(node, GraphIndex(graph))
        if n is None:
            report.decline(node.name or node.output[0], why)
            continue
        replace_node(graph, node, _muls(graph, node, n))
        report.count(f"x^{n}")
    if report.changed:
        tidy(graph)
    return out, report
