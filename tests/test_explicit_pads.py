"""explicit_pads: auto_pad written out as pads, values unchanged (vs onnxruntime)."""

from __future__ import annotations

import numpy as np
import pytest
from onnx import helper

from edgec.compiler.codegen.onnx_level.explicit_pads import explicit_pads, pads_for

from conftest import build_and_check, check_pass, random_const, tiny_model


@pytest.mark.parametrize("mode", ["SAME_UPPER", "SAME_LOWER", "VALID"])
@pytest.mark.parametrize("op", ["Conv", "MaxPool", "AveragePool", "LpPool"])
def test_auto_pad_becomes_pads(op, mode):
    rng = np.random.default_rng(0)
    attrs = {"kernel_shape": [3, 2], "strides": [2, 2], "auto_pad": mode}
    inputs, inits = ["x"], []
    if op == "Conv":
        inputs.append("w")
        inits.append(random_const("w", (4, 3, 3, 2), rng))
    model = tiny_model([helper.make_node(op, inputs, ["y"], **attrs)], [1, 3, 7, 6], inits)
    out, report = check_pass(explicit_pads, model, {op: 1})
    assert report.rewrites == {f"{op} {mode}": 1}
    assert not any(a.name == "auto_pad" for a in out.graph.node[0].attribute)


def test_same_lower_pool_builds_right():
    """TVM's importer made this pool one column short (fuzz seed 35)."""
    model = tiny_model([helper.make_node("MaxPool", ["x"], ["y"], kernel_shape=[1],
                                         strides=[2], auto_pad="SAME_LOWER")], [1, 4, 5])
    build_and_check(model)


def test_odd_total_goes_to_the_end_or_the_start():
    assert pads_for("SAME_UPPER", [6], [2], [2], [1]) == [0, 0]
    assert pads_for("SAME_UPPER", [7], [4], [2], [1]) == [1, 2]
    assert pads_for("SAME_LOWER", [7], [4], [2], [1]) == [2, 1]


def test_explicit_pads_left_alone():
    rng = np.random.default_rng(1)
    model = tiny_model([helper.make_node("Conv", ["x", "w"], ["y"], kernel_shape=[3, 3],
                                         pads=[1, 0, 1, 2])],
                       [1, 3, 6, 6], [random_const("w", (4, 3, 3, 3), rng)])
    out, report = explicit_pads(model)
    assert not report.changed and out is model


def test_conv_without_kernel_shape_takes_it_from_the_weights():
    rng = np.random.default_rng(3)
    model = tiny_model([helper.make_node("Conv", ["x", "w"], ["y"], auto_pad="SAME_UPPER",
                                         strides=[2, 2])],
                       [1, 3, 7, 6], [random_const("w", (4, 3, 3, 2), rng)])
    out, report = check_pass(explicit_pads, model, {"Conv": 1})
    assert report.rewrites == {"Conv SAME_UPPER": 1}, report.summary()


def test_ceil_mode_with_auto_pad_declined_with_its_reason():
    model = tiny_model([helper.make_node("MaxPool", ["x"], ["y"], kernel_shape=[2, 2],
                                         strides=[2, 2], auto_pad="SAME_UPPER", ceil_mode=1,
                                         name="pool")], [1, 3, 7, 7])
    out, report = explicit_pads(model)
    assert out is model and report.declined == ["pool: ceil_mode with auto_pad"]
