"""grouped: a standard conv as a grouped conv and a 1x1 conv of low rank (grouped low rank).

Pattern: a 2-D Conv with group 1 and constant weights W [N, C, kH, kW] (bias optional), whose
C input channels the option's g groups divide. Math (lowrank.py): the input channels are split
into g groups of C/g; the rank-r SVD of each group's N x (C/g*kH*kW) slice gives a KxK conv
with group g (C -> g*r channels, the original strides, pads, dilations) and a 1x1 conv
(g*r -> N) that carries the bias. g = 1 is channel decomposition (a KxK conv to r channels,
then 1x1); for a 1x1 conv it is two 1x1s of rank r. MACs against the dense conv:
r/N + g*r/(C*kH*kW). Exact at r = min(N, C/g*kH*kW).

Options (`GroupedOptions`): `groups` g; `rank` r, or `energy`, the share of each group's sum of
S^2 to keep (r is then the most any group needs); neither: full rank (exact). `only_cheaper`
declines a conv whose pair would not have fewer MACs. A conv this pass (or `separable`)
produced is declined, so a second run changes nothing. Lossy below full rank: judged by
accuracy on data (edgec validate, edgec compress), not by a tolerance.

`lowrank_pass` is the rule both this pass and `separable` (g = C) run.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import onnx

from .graph import GraphIndex, attr, clear_value_info, drop_dead
from .lowrank import FACTOR_MARK, factor, full_rank, macs_ratio, replace
from .report import PassReport
from .rules import Rule, apply_rules


@dataclass(frozen=True)
class GroupedOptions:
    groups: int = 1  # g: input channel groups of the KxK conv
    rank: int | None = None  # r per group; None: from `energy`, else full rank
    energy: float | None = None  # share of each group's sum of S^2 to keep, in (0, 1]
    only_cheaper: bool = True  # decline where the pair has as many MACs as the conv or more


def rank_for(w: np.ndarray, groups: int, rank: int | None, energy: float | None) -> int:
    """The rank the options ask for, within [1, full rank]."""
    full = full_rank(w.shape, groups)
    if rank is not None:
        return max(1, min(rank, full))
    if energy is None:
        return full
    n = w.shape[0]
    s = np.linalg.svd(w.reshape(n, groups, -1).transpose(1, 0, 2), compute_uv=False)
    share = np.cumsum(s ** 2, axis=1) / np.maximum(np.sum(s ** 2, axis=1, keepdims=True), 1e-30)
    return int(max(np.searchsorted(row, energy - 1e-12) + 1 for row in share))


def _check(node: onnx.NodeProto, index: GraphIndex, groups_of: Callable[[np.ndarray], int],
           opts: GroupedOptions, min_taps: int) -> str | None:
    w = index.const(node.input[1]) if len(node.input) > 1 else None
    if w is None:
        return "weights are not a constant"
    if w.ndim != 4:
        return f"{w.ndim - 2}-D conv; the rule splits 2-D kernels"
    if node.doc_string == FACTOR_MARK:
        return "a low-rank factor already"
    if attr(node, "group", 1) != 1:
        return "already grouped or depthwise"
    if w.shape[2] * w.shape[3] < min_taps:
        return "1x1 kernel: no spatial taps to split"
    if len(node.input) > 2 and node.input[2] and index.const(node.input[2]) is None:
        return "bias is not a constant"
    g = groups_of(w)
    if w.shape[1] % g:
        return f"{g} groups do not divide its {w.shape[1]} input channels"
    r = rank_for(w, g, opts.rank, opts.energy)
    if opts.only_cheaper and macs_ratio(w.shape, g, r) >= 1:
        return f"rank {r} of {full_rank(w.shape, g)} in {g} groups saves no MACs"
    return None


def _rewrite(node: onnx.NodeProto, index: GraphIndex, groups_of: Callable[[np.ndarray], int],
             opts: GroupedOptions, name: str) -> str:
    w = index.const(node.input[1])
    g = groups_of(w)
    r = rank_for(w, g, opts.rank, opts.energy)
    replace(index.graph, node, factor(w, g, r))
    return name if r == full_rank(w.shape, g) else f"{name} rank {r}"


def lowrank_pass(model: onnx.ModelProto, report: PassReport, name: str,
                 groups_of: Callable[[np.ndarray], int], opts: GroupedOptions,
                 min_taps: int = 1) -> onnx.ModelProto:
    """Apply the low-rank rewrite `name` to every standard conv of a copy of `model`."""
    model = onnx.ModelProto.FromString(model.SerializeToString())
    rule = Rule(name, lambda n, i: n.op_type == "Conv",
                lambda n, i: _check(n, i, groups_of, opts, min_taps),
                lambda n, i: _rewrite(n, i, groups_of, opts, name))
    apply_rules(model.graph, [rule], report, anchors=lambda n: n.op_type == "Conv")
    if report.changed:
        drop_dead(model.graph)
        model = clear_value_info(model)
    return model


def grouped(model: onnx.ModelProto,
            options: GroupedOptions | None = None) -> tuple[onnx.ModelProto, PassReport]:
    opts = options or GroupedOptions()
    report = PassReport("grouped")
    out = lowrank_pass(model, report, "conv->grouped+1x1", lambda w: opts.groups, opts)
    return out, report
