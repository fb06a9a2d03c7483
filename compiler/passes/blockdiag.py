"""blockdiag: a 1x1 conv as a block-diagonal grouped 1x1 conv, its channel permutations folded
into the convs before and after it.

Pattern: a 1x1 Conv with group 1 and constant weights W [N, C] (bias optional, constant). Its
input channels can be permuted for free where its input comes from a dense Conv (group 1,
constant weights and bias) through depthwise Convs (group = input = output channels, constant
weights and bias) and ops that act on every channel alike (Relu, LeakyRelu, Clip with constant
scalar bounds, Sigmoid, HardSigmoid, HardSwish, Tanh, Identity), each output on the way read
only by the next: the dense conv's weight rows and bias, and every depthwise conv's weights
and bias, are permuted by P. Its output channels can be permuted for free where everything
reading its output, through per-channel ops and depthwise convs (fanning out allowed, none of
them a graph output), ends in dense convs reading it as their data: the depthwise convs'
weights and biases are permuted by Q, the dense convs' weight columns by Q. A depthwise conv
maps channel c to channel c, so permuting its channels on both sides is permuting its weights.

Math: with g groups (g divides N and C), the 1x1 becomes a conv with group g whose output i is
the old output Q[i], computed from the inputs P[k] with the blocks of W[Q][:, P] on the
diagonal (g blocks of N/g x C/g). Reading permuted inputs and writing permuted outputs costs
nothing: the neighbours above absorb both, the bias goes with Q, strides and pads stay (zero
padding commutes with permuting channels), no Gather or Transpose is left, and the MACs are
1/g of the dense conv's. The only change is the dropped off-diagonal blocks: per output pixel
the error is -W_off x, W_off = W[Q][:, P] outside the blocks, so ||W - W_kept||_F^2 is the
W^2 mass outside them (for white inputs, E||error||^2 is that mass times E[x^2]); a W that is
a permuted block-diagonal matrix (in the permutations the graph allows) is rewritten exactly.

Sides: where only one side can be folded (the input is a graph input, a residual Add's output
or read twice; the output reaches an Add, a Concat or a graph output), the other permutation is
the identity and only the free one is searched (fixed rows: outputs in consecutive groups; or
fixed columns). Where neither can be, the layer is still rewritten with both identities, the
plain consecutive split: the same rewrite with a weaker choice of blocks, and the pass is
lossy and run only where named, so accuracy on data judges it like every other rewrite; its
label says the kept share, and the reasons neither side folds are reported ("became an
unpermuted block-diagonal 1x1: ..."). The labels say which sides were permuted: "in+out
permuted", "in permuted", "out permuted", "no permutation".

Choosing P, Q (data free, `plan`): maximize the kept sum of W^2 over balanced assignments of
rows and columns to groups. Start from a spectral ordering of the rows (a fixed combination of
the g leading left singular vectors of D_r^-1/2 W^2 D_c^-1/2, rescaled by D_r^-1/2: constant on
each block of a block-diagonal W; sorted and cut into g equal runs), and, as a second start,
the identity split. From each, alternately reassign columns given rows and rows given columns,
each step a balanced assignment improved by the best pairwise swap while one gains, so the
kept mass never falls, for a fixed number of rounds; a fixed side stays the identity split.
The better start wins: never below the plain consecutive split. With both sides free, the
groups are then relabelled alike on both sides (the kept mass stays) so that the most channels
keep their consecutive group: a block-diagonal W keeps every channel in place.

Options (`BlockDiagOptions`): `groups` g; `only_cheaper` is the lossy passes' shared option,
always met (the grouped conv has 1/g of the MACs; g = 1 is declined: nothing to drop). The
rewritten conv is marked (BLOCKDIAG_MARK), so a second run declines it. A conv it made is
grouped, so a later 1x1's permutation does not fold into it: convs are taken in graph order,
and in an inverted residual block (MobileNetV2) the expand 1x1 takes the permutation of the
channels it shares with the project 1x1, which is left with none. Lossy: judged by accuracy
on data, not by a tolerance; the report's label says the share of W^2 each rewrite kept.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx

from .graph import GraphIndex, attr, clear_value_info, drop_dead, set_attr, set_const, unique_name
from .report import PassReport
from .rules import Rule, apply_rules

BLOCKDIAG_MARK = "edgec: block-diagonal 1x1"  # doc_string of the convs this pass rewrites
PER_CHANNEL = {"Relu", "LeakyRelu", "Clip", "Sigmoid", "HardSigmoid", "HardSwish", "Tanh",
               "Identity"}
ROUNDS = 20  # alternations of the assignment search


@dataclass(frozen=True)
class BlockDiagOptions:
    groups: int = 2  # g: blocks on the diagonal; the grouped conv has 1/g of the MACs
    only_cheaper: bool = True  # always met at g >= 2 (shared with the other lossy passes)


@dataclass(frozen=True)
class Plan:
    rows: np.ndarray  # Q: output channel order, group k is rows[k*N/g:(k+1)*N/g]
    cols: np.ndarray  # P: input channel order, group k is cols[k*C/g:(k+1)*C/g]
    kept: float  # share of sum(W^2) inside the blocks


@dataclass(frozen=True)
class Fold:
    """The convs one side's permutation folds into: `rows` get their output channels (weight
    rows, bias) permuted, `cols` their input channels (weight columns)."""
    rows: list[onnx.NodeProto]
    cols: list[onnx.NodeProto]


def _onehot(groups: np.ndarray, g: int) -> np.ndarray:
    return np.eye(g)[groups]


def _chunks(m: int, g: int) -> np.ndarray:
    return np.arange(m) // (m // g)


def _balanced(gain: np.ndarray, groups: np.ndarray) -> np.ndarray:
    """Improve a balanced assignment of items to groups (gain[i, k]: item i in group k) by the
    best swap of two items while one gains; each swap keeps every group's size."""
    groups, g = groups.copy(), gain.shape[1]
    tol = 1e-12 * max(float(np.abs(gain).max()), 1e-30)
    for _ in range(len(groups) * g):
        move = gain - gain[np.arange(len(groups)), groups][:, None]  # gain of moving i to k
        best = np.full((g, g), -np.inf)  # best[a, b]: the most any item of a gains in b
        np.maximum.at(best, groups, move)
        swap = best + best.T
        np.fill_diagonal(swap, -np.inf)
        a, b = np.unravel_index(int(np.argmax(swap)), swap.shape)
        if swap[a, b] <= tol:
            break
        in_a, in_b = np.flatnonzero(groups == a), np.flatnonzero(groups == b)
        i, j = in_a[np.argmax(move[in_a, b])], in_b[np.argmax(move[in_b, a])]
        groups[i], groups[j] = b, a
    return groups


def _spectral_rows(a: np.ndarray, g: int) -> np.ndarray:
    """Rows sorted by a fixed combination of the normalized matrix's g leading left singular
    vectors, cut into g equal runs."""
    floor = 1e-30 * max(float(a.sum()), 1e-30)
    dr, dc = np.maximum(a.sum(1), floor), np.maximum(a.sum(0), floor)
    u = np.linalg.svd(a / np.sqrt(dr)[:, None] / np.sqrt(dc)[None, :], full_matrices=False)[0]
    k = min(g, u.shape[1])
    embed = (u[:, :k] / np.sqrt(dr)[:, None]) @ np.random.default_rng(0).standard_normal(k)
    groups = np.empty(len(dr), dtype=np.int64)
    groups[np.argsort(embed, kind="stable")] = _chunks(len(dr), g)
    return groups


def _alternate(a: np.ndarray, rows: np.ndarray, g: int,
               free: tuple[bool, bool]) -> tuple[np.ndarray, np.ndarray]:
    """Alternately reassign columns given rows and rows given columns (`free`: which of rows,
    columns may move) until neither changes or ROUNDS pass."""
    cols = _chunks(a.shape[1], g)
    for _ in range(ROUNDS):
        new_cols = _balanced(a.T @ _onehot(rows, g), cols) if free[1] else cols
        new_rows = _balanced(a @ _onehot(new_cols, g), rows) if free[0] else rows
        done = np.array_equal(new_cols, cols) and np.array_equal(new_rows, rows)
        rows, cols = new_rows, new_cols
        if done:
            break
    return rows, cols


def _in_place(rows: np.ndarray, cols: np.ndarray, g: int) -> tuple[np.ndarray, np.ndarray]:
    """Relabel the groups alike on both sides (the kept mass stays) so that the most channels
    stay in their consecutive group: a later 1x1 that cannot permute back sees them least
    moved (greedy on the g x g overlap)."""
    overlap = sum(_onehot(x, g).T @ _onehot(_chunks(len(x), g), g) for x in (rows, cols))
    label = np.empty(g, dtype=np.int64)
    for _ in range(g):
        a, b = np.unravel_index(int(np.argmax(overlap)), overlap.shape)
        label[a], overlap[a, :], overlap[:, b] = b, -1, -1
    return label[rows], label[cols]


def plan(w: np.ndarray, groups: int, rows: bool = True, cols: bool = True) -> Plan:
    """Q, P and the kept share of sum(W^2) for a 1x1 conv's weights `w` [N, C] in `groups`
    blocks (deterministic); `rows` / `cols` False keeps Q / P the identity."""
    a = np.square(w.astype(np.float64))
    kept = lambda rc: float(np.sum(a[rc[0][:, None] == rc[1][None, :]]))  # noqa: E731
    starts = [_chunks(a.shape[0], groups)]
    if rows:
        starts.insert(0, _spectral_rows(a, groups))
    row_g, col_g = max((_alternate(a, s, groups, (rows, cols)) for s in starts), key=kept)
    if rows and cols:  # a fixed side anchors the labels
        row_g, col_g = _in_place(row_g, col_g, groups)
    total = float(a.sum())
    return Plan(np.argsort(row_g, kind="stable"), np.argsort(col_g, kind="stable"),
                kept((row_g, col_g)) / total if total > 0 else 1.0)


def _conv_kind(node: onnx.NodeProto, index: GraphIndex, bias: bool) -> str:
    """"dense" (group 1) or "depthwise" (one input channel per output channel, as many of
    each) for a conv with constant weights, and a constant bias where `bias` or depthwise
    (its bias is permuted); else why its channels cannot be permuted."""
    w = index.const(node.input[1]) if len(node.input) > 1 else None
    if w is None:
        return "Conv with non-constant weights"
    group = attr(node, "group", 1)
    kind = "dense" if group == 1 else \
        "depthwise" if w.ndim > 1 and group == w.shape[0] and w.shape[1] == 1 else ""
    if not kind:
        return "grouped Conv"
    has_bias = len(node.input) > 2 and node.input[2]
    if (bias or kind == "depthwise") and has_bias and index.const(node.input[2]) is None:
        return "Conv with a non-constant bias"
    return kind


def _per_channel(node: onnx.NodeProto, index: GraphIndex) -> bool:
    """An op that acts on every channel alike: its other inputs are constant scalars."""
    return node.op_type in PER_CHANNEL and all(
        not i or (index.const(i) is not None and index.const(i).size == 1)
        for i in node.input[1:])


def _input_side(node: onnx.NodeProto, index: GraphIndex) -> tuple[Fold | None, str]:
    """The dense conv whose output channels reach `node`, and the depthwise convs on the way
    (through per-channel ops, each output read only by the next), else None and why."""
    name, rows = node.input[0], []
    while True:
        p = index.producer.get(name)
        if p is None:
            return None, "a graph input" if name in index.inputs else "no producer"
        if index.uses(name) != 1:
            return None, f"{p.op_type} output read {index.uses(name)} times"
        if _per_channel(p, index):
            name = p.input[0]
            continue
        kind = _conv_kind(p, index, bias=True) if p.op_type == "Conv" else p.op_type
        if kind not in ("dense", "depthwise"):
            return None, f"producer: {kind}"
        rows.append(p)
        if kind == "dense":
            return Fold(rows, []), ""
        name = p.input[0]


def _output_side(node: onnx.NodeProto, index: GraphIndex) -> tuple[Fold | None, str]:
    """The depthwise convs and the dense convs that read `node`'s output channels (through
    per-channel ops, fanning out), else None and why."""
    rows: list[onnx.NodeProto] = []
    cols: list[onnx.NodeProto] = []
    todo = [node.output[0]]
    while todo:
        name = todo.pop()
        if name in index.outputs:
            return None, "its output is a graph output" if name == node.output[0] else \
                f"its output reaches the graph output {name}"
        if name in index.subgraph_reads:
            return None, "a subgraph reads its output"
        for c in index.consumers.get(name, []):
            if any(c is seen for seen in rows + cols):
                continue
            data_only = c.input[0] == name and name not in c.input[1:]
            kind = _conv_kind(c, index, bias=False) if c.op_type == "Conv" else c.op_type
            if data_only and (kind == "depthwise" or _per_channel(c, index)):
                rows += [c] if kind == "depthwise" else []
                todo.append(c.output[0])
            elif data_only and kind == "dense":
                cols.append(c)
            else:
                return None, f"its output is not read by convs alone (consumer: {kind})"
    return (Fold(rows, cols), "") if cols else (None, "nothing reads its output")


def _conv_check(node: onnx.NodeProto, index: GraphIndex, opts: BlockDiagOptions) -> str | None:
    """Why `node` is no 1x1 conv this pass can make block-diagonal, else None."""
    if node.doc_string == BLOCKDIAG_MARK:
        return "a block-diagonal conv already"
    w = index.const(node.input[1]) if len(node.input) > 1 else None
    if w is None:
        return "weights are not a constant"
    if attr(node, "group", 1) != 1:
        return "already grouped or depthwise"
    if w.ndim != 4 or w.shape[2:] != (1, 1):
        return f"not a 1x1 conv ({'x'.join(map(str, w.shape[2:]))} kernel)"
    if len(node.input) > 2 and node.input[2] and index.const(node.input[2]) is None:
        return "bias is not a constant"
    g, (n, c) = opts.groups, w.shape[:2]
    if g <= 1:
        return f"{g} group: nothing to drop"
    if n % g or c % g:
        return f"{g} groups do not divide its {n} output and {c} input channels"
    return None


def _sides(node: onnx.NodeProto, index: GraphIndex) -> tuple[Fold | None, Fold | None, str]:
    """The input and output sides' folds (None where a side cannot be folded), and why
    neither can be ("" where one can)."""
    (inp, why_in), (out, why_out) = _input_side(node, index), _output_side(node, index)
    why = f"its input is not a conv output it alone reads ({why_in}); {why_out}"
    return inp, out, why if inp is None and out is None else ""


def _set(index: GraphIndex, node: onnx.NodeProto, at: int, value: np.ndarray) -> None:
    """Give `node` input `at` a new initializer of `value` (the old one may be shared)."""
    base = f"{node.name or node.output[0]}_bd_{'weight' if at == 1 else 'bias'}"
    node.input[at] = set_const(index.graph, unique_name(index.graph, base), value)


def _fold(index: GraphIndex, fold: Fold, order: np.ndarray) -> None:
    """Permute the channels of `fold`'s convs by `order` (new channel i is the old order[i])."""
    for conv in fold.rows:
        _set(index, conv, 1, index.const(conv.input[1])[order])
        if len(conv.input) > 2 and conv.input[2]:
            _set(index, conv, 2, index.const(conv.input[2])[order])
    for conv in fold.cols:
        _set(index, conv, 1, index.const(conv.input[1])[:, order])


def _rewrite(node: onnx.NodeProto, index: GraphIndex, opts: BlockDiagOptions,
             permute: bool) -> str:
    g, w = opts.groups, index.const(node.input[1])
    n, c = w.shape[:2]
    inp, out, _ = _sides(node, index) if permute else (None, None, "")
    p = plan(w[:, :, 0, 0], g, rows=out is not None, cols=inp is not None)
    dense = w[p.rows][:, p.cols]
    _set(index, node, 1, np.concatenate(
        [dense[k * n // g:(k + 1) * n // g, k * c // g:(k + 1) * c // g] for k in range(g)]))
    if len(node.input) > 2 and node.input[2]:
        _set(index, node, 2, index.const(node.input[2])[p.rows])
    for fold, order in ((inp, p.cols), (out, p.rows)):
        if fold is not None:
            _fold(index, fold, order)
    set_attr(node, "group", g)
    node.doc_string = BLOCKDIAG_MARK
    sides = {(True, True): "in+out permuted", (True, False): "in permuted",
             (False, True): "out permuted", (False, False): "no permutation"}
    return f"1x1->blockdiag g={g} ({sides[inp is not None, out is not None]}, " \
           f"kept {p.kept:.0%} of W^2)"


def blockdiag(model: onnx.ModelProto,
              options: BlockDiagOptions | None = None) -> tuple[onnx.ModelProto, PassReport]:
    """Rewrite every 1x1 conv of a copy of `model` that the pattern allows as a block-diagonal
    grouped 1x1 conv, its permutations folded into its neighbours where they can be."""
    opts = options or BlockDiagOptions()
    report = PassReport("blockdiag")
    model = onnx.ModelProto.FromString(model.SerializeToString())
    conv = lambda n, i: n.op_type == "Conv"  # noqa: E731
    permuted = lambda n, i: _conv_check(n, i, opts) or _sides(n, i)[2] or None  # noqa: E731
    rules = [Rule("1x1->blockdiag", conv, permuted, lambda n, i: _rewrite(n, i, opts, True)),
             Rule("1x1->blockdiag", conv, lambda n, i: _conv_check(n, i, opts),
                  lambda n, i: _rewrite(n, i, opts, False),
                  fallback="an unpermuted block-diagonal 1x1")]
    apply_rules(model.graph, rules, report, anchors=lambda n: n.op_type == "Conv")
    if report.changed:
        drop_dead(model.graph)
        model = clear_value_info(model)
    return model, report
