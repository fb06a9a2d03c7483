"""passes/blockdiag.py: a 1x1 conv as a block-diagonal grouped 1x1 conv, its channel
permutations folded into the convs around it. A permuted block-diagonal W is recovered exactly
(against onnxruntime, idempotent, no Gather or Transpose added); on a random W the search keeps
more of W^2 than the plain consecutive split and the output error is what the dropped mass
predicts; the cases it must decline, each with its reason; the rewritten model builds for the
host and agrees with onnxruntime; it runs only where named."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import helper, numpy_helper

from edgec.compiler import analysis, passes
from edgec.compiler.passes import BlockDiagOptions, blockdiag
from edgec.compiler.passes.blockdiag import plan

from conftest import build_and_check, check_pass, ort_run, random_const, tiny_model


def _group(model, name):
    node = next(n for n in model.graph.node if n.name == name)
    return next((a.i for a in node.attribute if a.name == "group"), 1)


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


def _permuted_blocks(n, c, g, rng):
    """W [N, C] = a block-diagonal matrix (g random blocks) with rows and columns shuffled."""
    blocks = np.zeros((n, c))
    for k in range(g):
        blocks[k * n // g:(k + 1) * n // g, k * c // g:(k + 1) * c // g] = \
            rng.standard_normal((n // g, c // g))
    w = np.empty_like(blocks)
    w[np.ix_(rng.permutation(n), rng.permutation(c))] = blocks
    return w


def _chain(w, *, before="Relu", fan_out=False, seed=0):
    """x -> 3x3 conv 'pre' (3 -> C) -> `before` -> 1x1 conv 'mid' (W, bias) -> Relu -> 3x3 conv
    'post' (-> 8); with `fan_out`, the Relu also feeds a 3x3 conv 'post2' and y is their sum."""
    rng, inits = np.random.default_rng(seed), []
    n, c = w.shape
    act = helper.make_node("Clip", ["p", "", "six"], ["a"]) if before == "Clip" else \
        helper.make_node(before, ["p"], ["a"])
    inits.append(numpy_helper.from_array(np.array(6.0, np.float32), "six"))
    nodes = [_conv("pre", ["x"], "p", [c, 3, 3, 3], rng, inits), act,
             _conv("mid", ["a"], "m", [n, c, 1, 1], rng, inits, weights=w[:, :, None, None]),
             helper.make_node("Relu", ["m"], ["r"]),
             _conv("post", ["r"], "y" if not fan_out else "q1", [8, n, 3, 3], rng, inits)]
    if fan_out:
        nodes += [_conv("post2", ["r"], "q2", [8, n, 3, 3], rng, inits),
                  helper.make_node("Add", ["q1", "q2"], ["y"])]
    return tiny_model(nodes, [1, 3, 10, 10], inits)


@pytest.mark.parametrize("before,fan_out", [("Relu", False), ("Clip", True),
                                            ("HardSwish", False)])
def test_permuted_block_diagonal_is_recovered_exactly(before, fan_out):
    w = _permuted_blocks(24, 16, 4, np.random.default_rng(7))
    model = _chain(w, before=before, fan_out=fan_out)
    convs = 4 if fan_out else 3
    out, report = check_pass(lambda m: blockdiag(m, BlockDiagOptions(groups=4)), model,
                             {"Conv": convs, "Gather": 0, "Transpose": 0})
    assert report.rewrites == {"1x1->blockdiag g=4 (kept 100% of W^2)": 1}
    assert _group(out, "mid") == 4
    mid_w = next(t for t in out.graph.initializer
                 if t.name == next(n for n in out.graph.node if n.name == "mid").input[1])
    assert list(mid_w.dims) == [24, 4, 1, 1]
    # the 1x1's MACs fall to 1/4; the permuted neighbours cost what they did
    macs = analysis.analyze(model).macs - analysis.analyze(out).macs
    assert macs == 24 * 16 * 100 * 3 // 4


def test_random_weights_keep_more_than_the_plain_split_and_lose_what_they_drop():
    n, c, g = 32, 16, 4
    rng, inits = np.random.default_rng(3), []
    w = rng.standard_normal((n, c))
    nodes = [_conv("pre", ["x"], "p", [c, c, 1, 1], rng, inits, bias=False,
                   weights=np.eye(c)[:, :, None, None]),
             _conv("mid", ["p"], "m", [n, c, 1, 1], rng, inits, bias=False,
                   weights=w[:, :, None, None]),
             _conv("post", ["m"], "y", [n, n, 1, 1], rng, inits, bias=False,
                   weights=np.eye(n)[:, :, None, None])]
    model = tiny_model(nodes, [1, c, 16, 16], inits)  # y = W x: the 1x1 alone, unpermuted
    out, report = blockdiag(model, BlockDiagOptions(groups=g))
    onnx.checker.check_model(out, full_check=True)
    assert _group(out, "mid") == g
    kept = plan(w, g).kept
    assert report.rewrites == {f"1x1->blockdiag g={g} (kept {kept:.0%} of W^2)": 1}
    a = w ** 2
    plain = sum(a[k * n // g:(k + 1) * n // g, k * c // g:(k + 1) * c // g].sum()
                for k in range(g)) / a.sum()
    assert kept > plain + 0.1  # the permutation search helps
    x = np.random.default_rng(1).standard_normal([1, c, 16, 16]).astype(np.float32)
    want, got = ort_run(model, {"x": x})[0], ort_run(out, {"x": x})[0]
    lost = float(np.sum((got - want) ** 2) / np.sum(want ** 2))
    # white inputs: E||W_off x||^2 / E||W x||^2 is the dropped share of W^2
    assert lost == pytest.approx(1 - kept, rel=0.1)
    assert lost < 1 - plain


def _decline_case(case):
    """A model around conv 'mid' (16 -> 24) that blockdiag must leave alone, and its options."""
    rng, inits, g = np.random.default_rng(0), [], 4
    pre = _conv("pre", ["x"], "p", [16, 3, 3, 3], rng, inits)
    mid = lambda inp="p", out="m", shape=(24, 16, 1, 1), **kw: \
        _conv("mid", [inp], out, list(shape), rng, inits, **kw)  # noqa: E731
    post = lambda inp="m": _conv("post", [inp], "y", [8, 24, 3, 3], rng, inits)  # noqa: E731
    nodes = {
        "3x3": lambda: [pre, mid(shape=(24, 16, 3, 3)), post()],
        "grouped": lambda: [pre, mid(shape=(24, 8, 1, 1), group=2), post()],
        "one group": lambda: [pre, mid(), post()],
        "groups do not divide": lambda: [pre, mid(), post()],
        "input from Add": lambda: [pre, _conv("pre2", ["x"], "p2", [16, 3, 3, 3], rng, inits),
                                   helper.make_node("Add", ["p", "p2"], ["s"]), mid("s"),
                                   post()],
        "input read twice": lambda: [pre, helper.make_node("Relu", ["p"], ["a"]), mid("a"),
                                     _conv("post", ["m"], "q", [16, 24, 1, 1], rng, inits),
                                     helper.make_node("Add", ["q", "a"], ["y"])],
        "output to Add": lambda: [pre, mid(shape=(16, 16, 1, 1)),
                                  _conv("post", ["m"], "q", [16, 16, 3, 3], rng, inits),
                                  helper.make_node("Add", ["q", "m"], ["y"])],
        "graph output": lambda: [pre, mid(out="y")],
        "output through Relu": lambda: [pre, mid(), helper.make_node("Relu", ["m"], ["y"])],
        "consumer depthwise": lambda: [pre, mid(), _conv("post", ["m"], "y", [24, 1, 3, 3], rng,
                                                         inits, group=24)],
        "weights not constant": lambda: [pre, helper.make_node("Identity", ["mid_w0"], ["wv"]),
                                         helper.make_node("Conv", ["p", "wv"], ["m"],
                                                          name="mid"), post()],
    }[case]()
    if case == "weights not constant":
        inits.append(random_const("mid_w0", [24, 16, 1, 1], rng))
    groups = {"one group": 1, "groups do not divide": 3}.get(case, g)
    return tiny_model(nodes, [1, 3, 10, 10], inits), BlockDiagOptions(groups=groups)


@pytest.mark.parametrize("case,why", [
    ("3x3", "not a 1x1 conv (3x3 kernel)"),
    ("grouped", "already grouped or depthwise"),
    ("one group", "1 group: nothing to drop"),
    ("groups do not divide", "3 groups do not divide its 24 output and 16 input channels"),
    ("input from Add", "its input is not a conv output it alone reads (producer: Add)"),
    ("input read twice", "its input is not a conv output it alone reads (Relu output read 2 "
                         "times)"),
    ("output to Add", "its output is not read by convs alone (consumer: Add)"),
    ("graph output", "its output is a graph output"),
    ("output through Relu", "its output reaches the graph output y"),
    ("consumer depthwise", "its output is not read by convs alone (consumer: grouped Conv)"),
    ("weights not constant", "weights are not a constant"),
])
def test_declines_what_it_must_not_rewrite(case, why):
    model, opts = _decline_case(case)
    out, report = blockdiag(model, opts)
    assert not report.changed
    assert f"mid: {why}" in report.declined, report.declined
    assert out.graph.SerializeToString() == model.graph.SerializeToString()


def test_rewritten_model_builds_for_the_host():
    w = _permuted_blocks(24, 16, 4, np.random.default_rng(1))
    w += 0.1 * np.random.default_rng(2).standard_normal(w.shape)  # off-block mass to drop
    out, report = blockdiag(_chain(w), BlockDiagOptions(groups=4))
    assert report.changed and _group(out, "mid") == 4
    build_and_check(out)  # the built grouped 1x1 against onnxruntime on the rewritten model


def test_runs_only_where_named():
    assert "blockdiag" not in passes.select() and not passes.PASSES["blockdiag"].exact
    assert "lossy" in passes.describe()["blockdiag"]
    w = _permuted_blocks(24, 16, 2, np.random.default_rng(5))
    _, reports = passes.run_passes(_chain(w), ["blockdiag"],
                                   {"blockdiag": BlockDiagOptions(groups=2)})
    assert reports[0].rewrites == {"1x1->blockdiag g=2 (kept 100% of W^2)": 1}
