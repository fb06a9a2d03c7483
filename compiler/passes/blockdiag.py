"""blockdiag: a 1x1 conv as a block-diagonal grouped 1x1 conv, its channel permutations folded
into the convs before and after it.

Pattern: a 1x1 Conv with group 1 and constant weights W [N, C] (bias optional, constant), whose
input is the output of a Conv P0 (group 1, constant weights and bias) that it alone reads, and
whose output is read only by Convs (group 1, constant weights, reading it as their data). Ops
that act on every channel alike (Relu, LeakyRelu, Clip with constant scalar bounds, Sigmoid,
HardSigmoid, HardSwish, Tanh, Identity) may stand between them: before the 1x1 each read only
along the chain, after it fanning out to several convs; nothing on the way out may be a graph
output.

Math: with g groups (g divides N and C), a permutation P of the C input channels and Q of the
N output channels make W[Q][:, P] close to block diagonal, g blocks of N/g x C/g. The rewrite
keeps only those blocks: a 1x1 conv with group g whose output i is the old output Q[i],
computed from the inputs P[k]. It reads permuted inputs for free: P0's weight rows and bias
are permuted by P (its output k is then the old channel P[k], and the per-channel ops between
commute with that). Its permuted outputs cost nothing either: each consumer conv's weights
W_c[:, Q] read old channel Q[i] at position i. No Gather or Transpose is left, the bias goes
with Q, strides and pads stay (zero padding commutes with permuting channels), and the MACs
are 1/g of the dense conv's. The only change is the dropped off-diagonal blocks: per output
pixel the error is -W_off x, W_off = W[Q][:, P] outside the blocks, so ||W - W_kept||_F^2 is
the W^2 mass outside them (for white inputs, E||error||^2 is that mass times E[x^2]); a W that
is a permuted block-diagonal matrix is rewritten exactly.

Choosing P, Q (data free, `plan`): maximize the kept sum of W^2 over balanced assignments of
rows and columns to groups. Start from a spectral ordering of the rows (a fixed combination of
the g leading left singular vectors of D_r^-1/2 W^2 D_c^-1/2, rescaled by D_r^-1/2: constant on
each block of a block-diagonal W; sorted and cut into g equal runs), and, as a second start,
the identity split. From each, alternately reassign columns given rows and rows given columns,
each step a balanced assignment improved by the best pairwise swap while one gains, so the
kept mass never falls, for a fixed number of rounds. The better start wins: never below the
plain consecutive split.

Where the output side cannot be folded the pass declines rather than keep Q = identity (a
weaker search over P alone), so every rewrite it makes has both permutations searched. Options
(`BlockDiagOptions`): `groups` g; `only_cheaper` is the lossy passes' shared option, always
met (the grouped conv has 1/g of the MACs; g = 1 is declined: nothing to drop). The rewritten
conv is marked (BLOCKDIAG_MARK), so a second run declines it. Lossy: judged by accuracy on
data, not by a tolerance; the report's label says the share of W^2 each rewrite kept.
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


def _alternate(a: np.ndarray, rows: np.ndarray, g: int) -> tuple[np.ndarray, np.ndarray]:
    cols = _chunks(a.shape[1], g)
    for _ in range(ROUNDS):
        new_cols = _balanced(a.T @ _onehot(rows, g), cols)
        new_rows = _balanced(a @ _onehot(new_cols, g), rows)
        done = np.array_equal(new_cols, cols) and np.array_equal(new_rows, rows)
        rows, cols = new_rows, new_cols
        if done:
            break
    return rows, cols


def plan(w: np.ndarray, groups: int) -> Plan:
    """Q, P and the kept share of sum(W^2) for a 1x1 conv's weights `w` [N, C] in `groups`
    blocks (deterministic)."""
    a = np.square(w.astype(np.float64))
    kept = lambda rc: float(np.sum(a[rc[0][:, None] == rc[1][None, :]]))  # noqa: E731
    starts = [_spectral_rows(a, groups), _chunks(a.shape[0], groups)]
    rows, cols = max((_alternate(a, s, groups) for s in starts), key=kept)
    total = float(a.sum())
    return Plan(np.argsort(rows, kind="stable"), np.argsort(cols, kind="stable"),
                kept((rows, cols)) / total if total > 0 else 1.0)


def _dense_conv(node: onnx.NodeProto, index: GraphIndex, bias: bool) -> str | None:
    """Why a neighbouring conv's channels cannot be permuted, else None."""
    if attr(node, "group", 1) != 1:
        return "grouped Conv"
    if index.const(node.input[1]) is None:
        return "Conv with non-constant weights"
    if bias and len(node.input) > 2 and node.input[2] and index.const(node.input[2]) is None:
        return "Conv with a non-constant bias"
    return None


def _per_channel(node: onnx.NodeProto, index: GraphIndex) -> bool:
    """An op that acts on every channel alike: its other inputs are constant scalars."""
    return node.op_type in PER_CHANNEL and all(
        not i or (index.const(i) is not None and index.const(i).size == 1)
        for i in node.input[1:])


def _producer(node: onnx.NodeProto, index: GraphIndex) -> tuple[onnx.NodeProto | None, str]:
    """The conv whose output channels feed `node` (through per-channel ops it alone reads),
    else None and why."""
    name = node.input[0]
    while True:
        p = index.producer.get(name)
        if p is None:
            return None, "a graph input" if name in index.inputs else "no producer"
        if index.uses(name) != 1:
            return None, f"{p.op_type} output read {index.uses(name)} times"
        if _per_channel(p, index):
            name = p.input[0]
            continue
        if p.op_type != "Conv":
            return None, f"producer: {p.op_type}"
        why = _dense_conv(p, index, bias=True)
        return (None, f"producer: {why}") if why else (p, "")


def _consumers(node: onnx.NodeProto, index: GraphIndex) -> tuple[list[onnx.NodeProto], str]:
    """The convs that read `node`'s output channels (through per-channel ops), else [] and
    why."""
    convs: list[onnx.NodeProto] = []
    todo = [node.output[0]]
    while todo:
        name = todo.pop()
        if name in index.outputs:
            return [], "its output is a graph output" if name == node.output[0] else \
                f"its output reaches the graph output {name}"
        if name in index.subgraph_reads:
            return [], "a subgraph reads its output"
        for c in index.consumers.get(name, []):
            if any(c is seen for seen in convs):
                continue
            data_only = c.input[0] == name and name not in c.input[1:]
            if data_only and _per_channel(c, index):
                todo.append(c.output[0])
            elif data_only and c.op_type == "Conv":
                why = _dense_conv(c, index, bias=False)
                if why:
                    return [], f"its output is not read by convs alone (consumer: {why})"
                convs.append(c)
            else:
                return [], f"its output is not read by convs alone (consumer: {c.op_type})"
    return convs, "" if convs else "nothing reads its output"


def _check(node: onnx.NodeProto, index: GraphIndex, opts: BlockDiagOptions) -> str | None:
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
    producer, why = _producer(node, index)
    if producer is None:
        return f"its input is not a conv output it alone reads ({why})"
    return _consumers(node, index)[1] or None


def _set(index: GraphIndex, node: onnx.NodeProto, at: int, value: np.ndarray) -> None:
    """Give `node` input `at` a new initializer of `value` (the old one may be shared)."""
    base = f"{node.name or node.output[0]}_bd_{'weight' if at == 1 else 'bias'}"
    node.input[at] = set_const(index.graph, unique_name(index.graph, base), value)


def _rewrite(node: onnx.NodeProto, index: GraphIndex, opts: BlockDiagOptions) -> str:
    g, w = opts.groups, index.const(node.input[1])
    n, c = w.shape[:2]
    producer, consumers = _producer(node, index)[0], _consumers(node, index)[0]
    p = plan(w[:, :, 0, 0], g)
    dense = w[p.rows][:, p.cols]
    _set(index, node, 1, np.concatenate(
        [dense[k * n // g:(k + 1) * n // g, k * c // g:(k + 1) * c // g] for k in range(g)]))
    if len(node.input) > 2 and node.input[2]:
        _set(index, node, 2, index.const(node.input[2])[p.rows])
    _set(index, producer, 1, index.const(producer.input[1])[p.cols])
    if len(producer.input) > 2 and producer.input[2]:
        _set(index, producer, 2, index.const(producer.input[2])[p.cols])
    for conv in consumers:
        _set(index, conv, 1, index.const(conv.input[1])[:, p.rows])
    set_attr(node, "group", g)
    node.doc_string = BLOCKDIAG_MARK
    return f"1x1->blockdiag g={g} (kept {p.kept:.0%} of W^2)"


def blockdiag(model: onnx.ModelProto,
              options: BlockDiagOptions | None = None) -> tuple[onnx.ModelProto, PassReport]:
    """Rewrite every 1x1 conv of a copy of `model` that the pattern allows as a block-diagonal
    grouped 1x1 conv, its permutations folded into its neighbours."""
    opts = options or BlockDiagOptions()
    report = PassReport("blockdiag")
    model = onnx.ModelProto.FromString(model.SerializeToString())
    rule = Rule("1x1->blockdiag", lambda n, i: n.op_type == "Conv",
                lambda n, i: _check(n, i, opts), lambda n, i: _rewrite(n, i, opts))
    apply_rules(model.graph, [rule], report, anchors=lambda n: n.op_type == "Conv")
    if report.changed:
        drop_dead(model.graph)
        model = clear_value_info(model)
    return model, report
