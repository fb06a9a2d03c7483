"""compiler/quantize/equalize: cross-layer equalization is exact (onnxruntime, 1e-5), leaves
each pair's two ranges equal, keeps a ReLU6 exact as Relu and a per-channel bound, declines
what is not scale-invariant, and a second run changes nothing."""

from __future__ import annotations

import numpy as np
from onnx import helper, numpy_helper

from edgec.compiler.quantize.equalize import equalize

from conftest import check_pass, tiny_model


def _dw_pw(between: str = "Relu", skew: float = 50.0):
    """depthwise 3x3 (+bias) -> `between` -> 1x1 conv, the depthwise ranges skewed per
    channel by up to `skew`."""
    rng = np.random.default_rng(0)
    w1 = rng.standard_normal((8, 1, 3, 3)).astype(np.float32)
    w1 *= np.geomspace(1 / skew, skew, 8, dtype=np.float32).reshape(-1, 1, 1, 1)
    inits = {"w1": w1, "b1": rng.standard_normal(8).astype(np.float32),
             "w2": rng.standard_normal((16, 8, 1, 1)).astype(np.float32),
             "b2": rng.standard_normal(16).astype(np.float32)}
    nodes = [helper.make_node("Conv", ["x", "w1", "b1"], ["a"], group=8, pads=[1] * 4,
                              name="dw")]
    if between == "Relu":
        nodes.append(helper.make_node("Relu", ["a"], ["r"]))
    elif between == "Clip":
        inits.update(lo=np.float32(0), hi=np.float32(6))
        nodes.append(helper.make_node("Clip", ["a", "lo", "hi"], ["r"]))
    elif between:
        nodes.append(helper.make_node(between, ["a"], ["r"]))
    src = "r" if between else "a"
    nodes.append(helper.make_node("Conv", [src, "w2", "b2"], ["y"], name="pw"))
    return tiny_model(nodes, [1, 8, 10, 10], inits)


def _weights(model, name):
    return {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}[name]


def test_pair_is_exact_and_balanced():
    model = _dw_pw()
    out, report = check_pass(equalize, model, {"Conv": 2, "Relu": 1})
    assert report.rewrites == {"conv pairs equalized": 1}
    w1, w2 = _weights(out, "w1"), _weights(out, "w2")
    r1 = np.abs(w1).reshape(8, -1).max(1)
    r2 = np.abs(w2).max(axis=(0, 2, 3))
    np.testing.assert_allclose(r1, r2, rtol=1e-5)
    before = np.abs(_weights(model, "w1")).reshape(8, -1).max(1)
    assert before.max() / before.min() > 10 * r1.max() / r1.min()  # spread about its square root


def test_without_activation_is_exact():
    check_pass(equalize, _dw_pw(between=""), {"Conv": 2})


def test_relu6_is_equalized_exactly_as_relu_then_a_channel_bound():
    """Clip(0, 6) between the convs becomes Relu then Min(6 / s) per channel: still exact, and
    the bound carries the channel scales (a second run finds the pair equalized)."""
    def bounded(model):
        return equalize(model, bounded=True)

    out, report = check_pass(bounded, _dw_pw(between="Clip"), {"Conv": 2, "Relu": 1,
                                                               "Min": 1, "Clip": 0})
    assert report.rewrites == {"conv pairs equalized": 1}
    bound = next(n for n in out.graph.node if n.op_type == "Min").input[1]
    r1 = np.abs(_weights(out, "w1")).reshape(8, -1).max(1)
    before = np.abs(_weights(_dw_pw("Clip"), "w1")).reshape(8, -1).max(1)
    np.testing.assert_allclose(_weights(out, bound).reshape(-1), 6 * r1 / before, rtol=1e-5)


def test_relu6_declined_unless_bounded():
    out, report = equalize(_dw_pw(between="Clip"))
    assert not report.changed
    assert "dw: read by Clip (equalizing through a bound: the bounded mode)" in report.declined


def test_sigmoid_declined_with_reason():
    out, report = equalize(_dw_pw(between="Sigmoid"))
    assert not report.changed
    assert "dw: read by Sigmoid, which is not scale-invariant" in report.declined
    np.testing.assert_array_equal(_weights(out, "w1"), _weights(_dw_pw("Sigmoid"), "w1"))
