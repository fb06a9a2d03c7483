"""passes/blockdiag.py: a 1x1 conv as a block-diagonal grouped 1x1 conv, its channel
permutations folded into the convs around it, through depthwise convs and per-channel ops. A
permuted block-diagonal W is recovered exactly (against onnxruntime, idempotent, no Gather or
Transpose added) with both sides permuted (MobileNet-style, through depthwise convs) and with
one side only (the output to a residual Add; the input from the graph input or an Add); on a
random W the search keeps more of W^2 than the plain consecutive split and the output error is
what the dropped mass predicts; where a side cannot be folded the rewrite equals the model
whose W lost exactly the dropped blocks, the label saying which sides were permuted; the cases
it must decline, each with its reason; the rewritten model builds for the host and agrees
with onnxruntime; it runs only where named."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import helper, numpy_helper

from edgec.compiler import analysis, passes
from edgec.compiler.passes import BlockDiagOptions, blockdiag
from edgec.compiler.passes.blockdiag import plan

from conftest import build_and_check, check_pass, ort_run, random_const, tiny_model


def _node(model, name):
    return next(n for n in model.graph.node if n.name == name)


def _group(model, name):
    return next((a.i for a in _node(model, name).attribute if a.name == "group"), 1)


def _conv(name, inputs, out, shape, rng, inits, bias=True, weights=None, **attrs):
    """A Conv `name` reading `inputs` (data first), random weights of `shape` (or `weights`)
    and a random bias, added to `inits`; a KxK kernel gets same padding."""
    w = random_const(f"{name}_w", shape, rng) if weights is None else \
        numpy_helper.from_array(weights.astype(np.float32), f"{name}_w")
    inits.append(w)
    ins = [*inputs, w.name]
    if bias:
        inits.append(random_const(f"{name}_b", [shape[0]], rng))
        ins.append(f"{name}_b")
    k = shape[2]
    return helper.make_node("Conv", ins, [out], name=name, pads=[k // 2] * 4, **attrs)


def _dw(name, inp, out, c, rng, inits, bias=True):
    """A depthwise 3x3 conv over `c` channels."""
    return _conv(name, [inp], out, [c, 1, 3, 3], rng, inits, bias=bias, group=c)


def _permuted_blocks(n, c, g, rng, rows=True, cols=True):
    """W [N, C] = a block-diagonal matrix (g random blocks) with its rows and/or columns
    shuffled."""
    blocks = np.zeros((n, c))
    for k in range(g):
        blocks[k * n // g:(k + 1) * n // g, k * c // g:(k + 1) * c // g] = \
            rng.standard_normal((n // g, c // g))
    w = np.empty_like(blocks)
    w[np.ix_(rng.permutation(n) if rows else np.arange(n),
             rng.permutation(c) if cols else np.arange(c))] = blocks
    return w


def _mid(w, rng, inits, inp="a", out="m"):
    """The 1x1 conv 'mid' of weights `w` [N, C] and a random bias."""
    return _conv("mid", [inp], out, [*w.shape, 1, 1], rng, inits, weights=w[:, :, None, None])


def _chain(w, *, before="Relu", fan_out=False, seed=0):
    """x -> 3x3 conv 'pre' (3 -> C) -> `before` -> 1x1 conv 'mid' (W, bias) -> Relu -> 3x3 conv
    'post' (-> 8); with `fan_out`, the Relu also feeds a 3x3 conv 'post2' and y is their sum."""
    rng, inits = np.random.default_rng(seed), []
    n, c = w.shape
    act = helper.make_node("Clip", ["p", "", "six"], ["a"]) if before == "Clip" else \
        helper.make_node(before, ["p"], ["a"])
    inits.append(numpy_helper.from_array(np.array(6.0, np.float32), "six"))
    nodes = [_conv("pre", ["x"], "p", [c, 3, 3, 3], rng, inits), act, _mid(w, rng, inits),
             helper.make_node("Relu", ["m"], ["r"]),
             _conv("post", ["r"], "y" if not fan_out else "q1", [8, n, 3, 3], rng, inits)]
    if fan_out:
        nodes += [_conv("post2", ["r"], "q2", [8, n, 3, 3], rng, inits),
                  helper.make_node("Add", ["q1", "q2"], ["y"])]
    return tiny_model(nodes, [1, 3, 10, 10], inits)


def _mobilenet(w, seed=0):
    """MobileNet-style: x -> 3x3 conv 'pre' (3 -> C) -> depthwise 'dw1' -> ReLU6 (Clip) -> 1x1
    'mid' (W) -> depthwise 'dw2' (no bias) -> ReLU6 -> 3x3 conv 'post' (-> 8)."""
    rng, inits = np.random.default_rng(seed), []
    n, c = w.shape
    inits += [numpy_helper.from_array(np.array(v, np.float32), k)
              for k, v in (("zero", 0.0), ("six", 6.0))]
    nodes = [_conv("pre", ["x"], "p", [c, 3, 3, 3], rng, inits),
             _dw("dw1", "p", "d", c, rng, inits),
             helper.make_node("Clip", ["d", "zero", "six"], ["a"]), _mid(w, rng, inits),
             _dw("dw2", "m", "e", n, rng, inits, bias=False),
             helper.make_node("Clip", ["e", "zero", "six"], ["r"]),
             _conv("post", ["r"], "y", [8, n, 3, 3], rng, inits)]
    return tiny_model(nodes, [1, 3, 10, 10], inits)


def _recovered(model, g, label, convs):
    """check_pass (exact, idempotent, no Gather/Transpose) and the one rewrite, labelled."""
    out, report = check_pass(lambda m: blockdiag(m, BlockDiagOptions(groups=g)), model,
                             {"Conv": convs, "Gather": 0, "Transpose": 0})
    assert report.rewrites == {f"1x1->blockdiag g={g} ({label}, kept 100% of W^2)": 1}
    assert _group(out, "mid") == g
    return out


@pytest.mark.parametrize("before,fan_out", [("Relu", False), ("Clip", True),
                                            ("HardSwish", False)])
def test_permuted_block_diagonal_is_recovered_exactly(before, fan_out):
    w = _permuted_blocks(24, 16, 4, np.random.default_rng(7))
    model = _chain(w, before=before, fan_out=fan_out)
    out = _recovered(model, 4, "in+out permuted", 4 if fan_out else 3)
    mid_w = next(t for t in out.graph.initializer if t.name == _node(out, "mid").input[1])
    assert list(mid_w.dims) == [24, 4, 1, 1]
    # the 1x1's MACs fall to 1/4; the permuted neighbours cost what they did
    macs = analysis.analyze(model).macs - analysis.analyze(out).macs
    assert macs == 24 * 16 * 100 * 3 // 4


def test_permutations_fold_through_depthwise_convs():
    w = _permuted_blocks(32, 16, 4, np.random.default_rng(11))
    assert plan(w, 4).kept == pytest.approx(1.0)
    out = _recovered(_mobilenet(w), 4, "in+out permuted", 5)
    assert [_group(out, n) for n in ("dw1", "dw2", "pre", "post")] == [16, 32, 1, 1]


def test_output_to_a_residual_add_permutes_the_input_side_only():
    rng, inits = np.random.default_rng(2), []
    w = _permuted_blocks(16, 16, 4, rng, rows=False)  # block-diagonal after P alone
    assert plan(w, 4, rows=False).kept == pytest.approx(1.0)
    nodes = [_conv("pre", ["x"], "p", [16, 3, 3, 3], rng, inits),
             helper.make_node("Relu", ["p"], ["a"]), _mid(w, rng, inits),
             _conv("skip", ["x"], "s", [16, 3, 3, 3], rng, inits),
             helper.make_node("Add", ["m", "s"], ["y"])]
    _recovered(tiny_model(nodes, [1, 3, 10, 10], inits), 4, "in permuted", 3)


@pytest.mark.parametrize("source", ["graph input", "Add"])
def test_input_from_the_graph_input_or_an_add_permutes_the_output_side_only(source):
    rng, inits = np.random.default_rng(4), []
    w = _permuted_blocks(24, 16, 2, rng, cols=False)  # block-diagonal after Q alone
    nodes, x_shape = [], [1, 16, 10, 10]
    if source == "Add":
        nodes, x_shape = [_conv("pre1", ["x"], "p1", [16, 3, 3, 3], rng, inits),
                          _conv("pre2", ["x"], "p2", [16, 3, 3, 3], rng, inits),
                          helper.make_node("Add", ["p1", "p2"], ["s"])], [1, 3, 10, 10]
    nodes += [_mid(w, rng, inits, inp="x" if source == "graph input" else "s"),
              helper.make_node("Relu", ["m"], ["r"]),
              _conv("post", ["r"], "y", [8, 24, 3, 3], rng, inits)]
    _recovered(tiny_model(nodes, x_shape, inits), 2, "out permuted", 2 + 2 * (source == "Add"))


def test_a_1x1_after_a_rewritten_1x1_keeps_its_blocks():
    """An already block-diagonal W keeps its channels in place, so the 1x1 after it, whose
    input (a grouped conv now) and output (an Add) cannot fold, still finds its blocks."""
    rng, inits, g = np.random.default_rng(6), [], 4
    w1, w2 = _permuted_blocks(24, 16, g, rng, False, False), _permuted_blocks(16, 24, g, rng,
                                                                              False, False)
    p = plan(w1, g)
    assert list(p.rows) == list(range(24)) and list(p.cols) == list(range(16))
    nodes = [_conv("pre", ["x"], "p", [16, 3, 3, 3], rng, inits),
             helper.make_node("Relu", ["p"], ["a"]), _mid(w1, rng, inits),
             helper.make_node("Relu", ["m"], ["r"]),
             _conv("mid2", ["r"], "m2", [16, 24, 1, 1], rng, inits, weights=w2[..., None, None]),
             _conv("skip", ["x"], "s", [16, 3, 3, 3], rng, inits),
             helper.make_node("Add", ["m2", "s"], ["y"])]
    out, report = check_pass(lambda m: blockdiag(m, BlockDiagOptions(groups=g)),
                             tiny_model(nodes, [1, 3, 10, 10], inits), {"Conv": 4})
    assert report.rewrites == {f"1x1->blockdiag g={g} ({sides}, kept 100% of W^2)": 1
                               for sides in ("in+out permuted", "no permutation")}
    assert [d for d in report.declined if d.startswith("mid2")] == [
        "mid2: became an unpermuted block-diagonal 1x1: its input is not a conv output it alone "
        "reads (producer: grouped Conv); its output is not read by convs alone (consumer: Add)"]


def test_random_weights_keep_more_than_the_plain_split_and_lose_what_they_drop():
    n, c, g = 32, 16, 4
    rng, inits = np.random.default_rng(3), []
    w = rng.standard_normal((n, c))
    eye = lambda m: np.pad(np.eye(m)[:, :, None, None], [(0, 0)] * 2 + [(1, 1)] * 2)  # noqa
    nodes = [_conv("pre", ["x"], "p", [c, c, 3, 3], rng, inits, bias=False, weights=eye(c)),
             _conv("mid", ["p"], "m", [n, c, 1, 1], rng, inits, bias=False,
                   weights=w[:, :, None, None]),
             _conv("post", ["m"], "y", [n, n, 3, 3], rng, inits, bias=False, weights=eye(n))]
    model = tiny_model(nodes, [1, c, 16, 16], inits)  # y = W x: the 1x1 alone, unpermuted
    out, report = blockdiag(model, BlockDiagOptions(groups=g))
    onnx.checker.check_model(out, full_check=True)
    assert _group(out, "mid") == g
    kept = plan(w, g).kept
    assert report.rewrites == {f"1x1->blockdiag g={g} (in+out permuted, kept {kept:.0%} of W^2)": 1}
    a = w ** 2
    plain = sum(a[k * n // g:(k + 1) * n // g, k * c // g:(k + 1) * c // g].sum()
                for k in range(g)) / a.sum()
    assert kept > plain + 0.1  # the permutation search helps
    assert plan(w, g, rows=False, cols=False).kept == pytest.approx(plain)
    assert plain < plan(w, g, rows=False).kept < kept  # one free side: in between
    x = np.random.default_rng(1).standard_normal([1, c, 16, 16]).astype(np.float32)
    want, got = ort_run(model, {"x": x})[0], ort_run(out, {"x": x})[0]
    lost = float(np.sum((got - want) ** 2) / np.sum(want ** 2))
    # white inputs: E||W_off x||^2 / E||W x||^2 is the dropped share of W^2
    assert lost == pytest.approx(1 - kept, rel=0.1)
    assert lost < 1 - plain


def _decline_case(case):
    """A model around conv 'mid' (16 -> 24) that blockdiag must leave alone or rewrite with a
    side unpermuted, and its options."""
    rng, inits, g = np.random.default_rng(0), [], 4
    pre = _conv("pre", ["x"], "p", [16, 3, 3, 3], rng, inits)
    mid = lambda inp="p", out="m", shape=(24, 16, 1, 1), **kw: \
        _conv("mid", [inp], out, list(shape), rng, inits, **kw)  # noqa: E731
    post = lambda inp="m": _conv("post", [inp], "y", [8, 24, 3, 3], rng, inits)  # noqa: E731
    pre_add = lambda: [pre, _conv("pre2", ["x"], "p2", [16, 3, 3, 3], rng, inits),  # noqa: E731
                       helper.make_node("Add", ["p", "p2"], ["s"])]
    variable = lambda name, shape: [  # noqa: E731
        helper.make_node("Identity", [f"{name}_w0"], [f"{name}_wv"]),
        inits.append(random_const(f"{name}_w0", shape, rng))][:1]
    nodes = {
        "3x3": lambda: [pre, mid(shape=(24, 16, 3, 3)), post()],
        "grouped": lambda: [pre, mid(shape=(24, 8, 1, 1), group=2), post()],
        "one group": lambda: [pre, mid(), post()],
        "groups do not divide": lambda: [pre, mid(), post()],
        "weights not constant": lambda: [pre, *variable("mid", [24, 16, 1, 1]),
                                         helper.make_node("Conv", ["p", "mid_wv"], ["m"],
                                                          name="mid"), post()],
        "input from Add": lambda: [*pre_add(), mid("s"), post()],
        "input read twice": lambda: [pre, helper.make_node("Relu", ["p"], ["a"]), mid("a"),
                                     _conv("post", ["m"], "q", [16, 24, 3, 3], rng, inits),
                                     helper.make_node("Add", ["q", "a"], ["y"])],
        "output to Add": lambda: [pre, mid(shape=(16, 16, 1, 1)),
                                  _conv("post", ["m"], "q", [16, 16, 3, 3], rng, inits),
                                  helper.make_node("Add", ["q", "m"], ["y"])],
        "graph output": lambda: [pre, mid(out="y")],
        "output through Relu": lambda: [pre, mid(), helper.make_node("Relu", ["m"], ["y"])],
        "consumer depthwise": lambda: [pre, mid(), _dw("post", "m", "y", 24, rng, inits)],
        "neither side": lambda: [*pre_add(), mid("s"),
                                 _conv("post", ["m"], "q", [24, 24, 3, 3], rng, inits),
                                 helper.make_node("Add", ["q", "m"], ["y"])],
        "grouped in the chain": lambda: [
            _conv("pre0", ["x"], "p0", [8, 3, 3, 3], rng, inits),  # a depthwise x2 is grouped
            _conv("pre_x2", ["p0"], "p", [16, 1, 3, 3], rng, inits, group=8), mid(),
            _dw("dw", "m", "d", 24, rng, inits), helper.make_node("Relu", ["d"], ["r"]),
            _conv("post", ["r"], "y", [8, 12, 3, 3], rng, inits, group=2)],
        "depthwise weights not constant": lambda: [
            pre, *variable("dw1", [16, 1, 3, 3]),
            helper.make_node("Conv", ["p", "dw1_wv"], ["a"], name="dw1", group=16,
                             pads=[1] * 4), mid("a"), *variable("dw2", [24, 1, 3, 3]),
            helper.make_node("Conv", ["m", "dw2_wv"], ["d"], name="dw2", group=24,
                             pads=[1] * 4), post("d")],
    }[case]()
    groups = {"one group": 1, "groups do not divide": 3}.get(case, g)
    return tiny_model(nodes, [1, 3, 10, 10], inits), BlockDiagOptions(groups=groups)


@pytest.mark.parametrize("case,why", [
    ("3x3", "not a 1x1 conv (3x3 kernel)"),
    ("grouped", "already grouped or depthwise"),
    ("one group", "1 group: nothing to drop"),
    ("groups do not divide", "3 groups do not divide its 24 output and 16 input channels"),
    ("weights not constant", "weights are not a constant"),
])
def test_declines_what_it_must_not_rewrite(case, why):
    model, opts = _decline_case(case)
    out, report = blockdiag(model, opts)
    assert not report.changed
    assert f"mid: {why}" in report.declined, report.declined
    assert out.graph.SerializeToString() == model.graph.SerializeToString()


NOT_IN = "its input is not a conv output it alone reads"
NOT_OUT = "its output is not read by convs alone"


@pytest.mark.parametrize("case,sides,why", [
    ("input from Add", "out permuted", None),
    ("input read twice", "out permuted", None),
    ("output to Add", "in permuted", None),
    ("graph output", "in permuted", None),
    ("output through Relu", "in permuted", None),
    ("consumer depthwise", "in permuted", None),  # the depthwise conv's output is y
    ("neither side", "no permutation",
     f"{NOT_IN} (producer: Add); {NOT_OUT} (consumer: Add)"),
    ("grouped in the chain", "no permutation",
     f"{NOT_IN} (producer: grouped Conv); {NOT_OUT} (consumer: grouped Conv)"),
    ("depthwise weights not constant", "no permutation",
     f"{NOT_IN} (producer: Conv with non-constant weights); "
     f"{NOT_OUT} (consumer: Conv with non-constant weights)"),
])
def test_a_side_that_cannot_fold_stays_unpermuted(case, sides, why):
    """The rewrite equals the model whose W lost exactly the dropped blocks of W[Q][:, P] (P, Q
    searched on the sides that fold, the identity on the others)."""
    model, opts = _decline_case(case)
    out, report = blockdiag(model, opts)
    onnx.checker.check_model(out, full_check=True)
    w = numpy_helper.to_array(next(t for t in model.graph.initializer if t.name == "mid_w"))
    p = plan(w[:, :, 0, 0], 4, rows="out" in sides, cols="in " in sides + " ")
    assert report.rewrites == {f"1x1->blockdiag g=4 ({sides}, kept {p.kept:.0%} of W^2)": 1}
    assert [d for d in report.declined if d.startswith("mid:")] == \
        ([f"mid: became an unpermuted block-diagonal 1x1: {why}"] if why else [])
    row_g, col_g = np.empty(w.shape[0], int), np.empty(w.shape[1], int)
    row_g[p.rows], col_g[p.cols] = [np.arange(m) // (m // 4) for m in w.shape[:2]]
    kept = model.__deepcopy__()
    t = next(t for t in kept.graph.initializer if t.name == "mid_w")
    t.CopyFrom(numpy_helper.from_array(w * (row_g[:, None] == col_g[None, :])[..., None, None],
                                       "mid_w"))
    x = np.random.default_rng(0).standard_normal([1, 3, 10, 10]).astype(np.float32)
    want, got = ort_run(kept, {"x": x})[0], ort_run(out, {"x": x})[0]
    assert np.abs(got - want).max() <= 1e-5 * np.abs(want).max()
    again, second = blockdiag(out, opts)
    assert not second.changed and again.graph.SerializeToString() == out.graph.SerializeToString()


def test_rewritten_model_builds_for_the_host():
    w = _permuted_blocks(24, 16, 4, np.random.default_rng(1))
    w += 0.1 * np.random.default_rng(2).standard_normal(w.shape)  # off-block mass to drop
    out, report = blockdiag(_mobilenet(w), BlockDiagOptions(groups=4))
    assert report.changed and _group(out, "mid") == 4
    build_and_check(out)  # the built grouped 1x1 against onnxruntime on the rewritten model


def test_runs_only_where_named():
    assert "blockdiag" not in passes.select() and not passes.PASSES["blockdiag"].exact
    assert "lossy" in passes.describe()["blockdiag"]
    w = _permuted_blocks(24, 16, 2, np.random.default_rng(5))
    _, reports = passes.run_passes(_chain(w), ["blockdiag"],
                                   {"blockdiag": BlockDiagOptions(groups=2)})
    assert reports[0].rewrites == {"1x1->blockdiag g=2 (in+out permuted, kept 100% of W^2)": 1}
