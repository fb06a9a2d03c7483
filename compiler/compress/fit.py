"""Data-aware low-rank layers, fitted one after another so each sees the compressed prefix.

A `Plan` maps conv node names to a `LayerPlan` (groups g, rank r; g = C is the separable
form). `build` walks the model's convs in graph order; for each planned conv it collects the
moments of its input in the model as compressed so far and of its output in the original
(activations.py), factors the weights (lowrank.factor: SVD of W_j M_j^1/2, M from the
original model's inputs, whose roots are computed once) and refits the 1x1 and bias by ridge
least squares on the compressed prefix's moments (lowrank.refit), then replaces the conv by
the pair. Moments of a conv whose prefix nothing changed are the
original model's and are cached across builds (`MomentCache`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import onnx

from edgec.compiler.passes.graph import GraphIndex, attr, clear_value_info, drop_dead
from edgec.compiler.passes.lowrank import FACTOR_MARK, Factors, factor, refit, replace

from .activations import LayerMoments, layer_moments

RIDGE = 1e-4  # plus (g*r + 1) / rows: fewer samples per parameter pull harder to the factors


@dataclass(frozen=True)
class LayerPlan:
    groups: int
    rank: int

    def form(self, channels: int) -> str:
        return ("separable" if self.groups == channels and channels > 1 else
                "channel" if self.groups == 1 else "grouped")


Plan = dict[str, LayerPlan]


@dataclass
class MomentCache:
    """Moments of each conv on the original prefix, keyed by node name."""

    original: onnx.ModelProto
    feeds: list[dict[str, np.ndarray]]
    moments: dict[str, LayerMoments] = field(default_factory=dict)

    def get(self, node: onnx.NodeProto, kernel: tuple[int, int]) -> LayerMoments:
        if node.name not in self.moments:
            self.moments[node.name] = layer_moments(self.original, self.original, node, kernel,
                                                    self.feeds)
        return self.moments[node.name]


def convs(model: onnx.ModelProto) -> list[onnx.NodeProto]:
    """The model's standard 2-D convs with constant weights (and bias, as the passes ask), in
    graph order, but for the factors of an earlier low-rank rewrite (compressing twice changes
    nothing more)."""
    index = GraphIndex(model.graph)
    out = []
    for node in model.graph.node:
        if node.op_type != "Conv" or len(node.input) < 2 or node.doc_string == FACTOR_MARK:
            continue
        w = index.const(node.input[1])
        bias_ok = len(node.input) < 3 or not node.input[2] or index.const(node.input[2]) is not None
        if w is not None and w.ndim == 4 and attr(node, "group", 1) == 1 and bias_ok:
            out.append(node)
    return out


def fit_layer(w: np.ndarray, bias: np.ndarray | None, plan: LayerPlan,
              original: LayerMoments, current: LayerMoments | None = None) -> Factors:
    """The data-aware pair of weights `w` for `plan`: factors whitened by the `original`
    model's input moments (their roots computed once per layer and group count), the 1x1 and
    bias refit on the `current` ones (the compressed prefix's; default: the original's)."""
    f = factor(w, plan.groups, plan.rank, bias, roots=original.roots(plan.groups))
    m = current or original
    gr = plan.groups * plan.rank
    return refit(f, m.moment, m.cross, RIDGE + (gr + 1) / m.rows)


def build(original: onnx.ModelProto, plan: Plan, cache: MomentCache) -> onnx.ModelProto:
    """`original` with every planned conv replaced by its data-aware pair, in graph order."""
    model = onnx.ModelProto.FromString(original.SerializeToString())
    changed = False
    for name in [n.name for n in convs(original)]:
        if name not in plan:
            continue
        index = GraphIndex(model.graph)
        node = next(n for n in model.graph.node if n.name == name)
        w = index.const(node.input[1])
        bias = index.const(node.input[2]) if len(node.input) > 2 and node.input[2] else None
        kernel = (w.shape[2], w.shape[3])
        current = layer_moments(model, original, node, kernel, cache.feeds) if changed else None
        replace(model.graph, node, fit_layer(w, bias, plan[name], cache.get(node, kernel),
                                             current))
        changed = True
    if changed:
        drop_dead(model.graph)
        model = clear_value_info(model)
    return model
