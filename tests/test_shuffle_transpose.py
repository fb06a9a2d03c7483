"""shuffle_transpose on tiny graphs: a ConvTranspose whose kernel is its stride becomes a 1x1
Conv + DepthToSpace, equal to onnxruntime on the original within 1e-5 (check_pass: checker,
op counts, idempotence); the cases it must decline, each with its reason; and a DBNet-style
decoder (ConvTranspose + Relu, then ConvTranspose to one channel + Sigmoid) through the whole
`cpu` pipeline, right over several calls."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import helper

from edgec.compiler.codegen.onnx_level.shuffle_transpose import shuffle_transpose

from conftest import build_and_check, check_pass, random_const, tiny_model

RNG = np.random.default_rng(0)


def _transpose(c_in: int, c_out: int, k: int, stride: int, bias: bool = True, **attrs):
    inits = [random_const("w", (c_in, c_out, k, k), RNG)]
    inits += [random_const("b", (c_out,), RNG)] if bias else []
    node = helper.make_node("ConvTranspose", ["x", "w"] + (["b"] if bias else []), ["y"],
                            kernel_shape=[k, k], strides=[stride, stride], **attrs)
    return tiny_model([node], [1, c_in, 6, 7], inits)


@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("c_in, c_out, s", [(10, 10, 2), (10, 1, 2), (3, 5, 3), (8, 4, 4)])
def test_stride_sized_kernel_becomes_a_1x1_conv_and_a_shuffle(c_in, c_out, s, bias):
    out, report = check_pass(shuffle_transpose, _transpose(c_in, c_out, s, s, bias),
                             {"ConvTranspose": 0, "Conv": 1, "DepthToSpace": 1})
    assert report.rewrites == {f"{s}x{s} stride-{s} ConvTranspose": 1}
    inits = {t.name: list(t.dims) for t in out.graph.initializer}
    conv = next(n for n in out.graph.node if n.op_type == "Conv")
    assert inits[conv.input[1]] == [c_out * s * s, c_in, 1, 1]


@pytest.mark.parametrize("k, stride, attrs, why", [
    (3, 2, {}, "kernel [3, 3] is not the stride [2, 2]"),
    (2, 2, {"pads": [1, 1, 1, 1]}, "padded"),
    (2, 2, {"output_padding": [1, 1]}, "output padding"),
    (2, 2, {"group": 2}, "grouped"),
    (2, 2, {"dilations": [2, 2]}, "dilated"),
])
def test_other_transposed_convs_are_declined_with_a_reason(k, stride, attrs, why):
    c_in = 4
    model = _transpose(c_in, 4 // attrs.get("group", 1), k, stride, **attrs)
    out, report = shuffle_transpose(model)
    assert not report.changed
    assert [n.op_type for n in out.graph.node] == ["ConvTranspose"]
    assert report.declined == [f"y: {why}"]


def test_a_non_constant_weight_is_declined():
    model = tiny_model([helper.make_node("ConvTranspose", ["x", "x"], ["y"],
                                         kernel_shape=[2, 2], strides=[2, 2])],
                       [2, 2, 2, 2], infer=False)
    _, report = shuffle_transpose(model)
    assert report.declined == ["y: weights are not a constant"]


def test_a_dbnet_style_decoder_through_the_cpu_pipeline():
    inits = [random_const("w1", (10, 10, 2, 2), RNG), random_const("b1", (10,), RNG),
             random_const("w2", (10, 1, 2, 2), RNG), random_const("b2", (1,), RNG)]
    nodes = [helper.make_node("ConvTranspose", ["x", "w1", "b1"], ["t1"], kernel_shape=[2, 2],
                              strides=[2, 2]),
             helper.make_node("Relu", ["t1"], ["r1"]),
             helper.make_node("ConvTranspose", ["r1", "w2", "b2"], ["t2"], kernel_shape=[2, 2],
                              strides=[2, 2]),
             helper.make_node("Sigmoid", ["t2"], ["y"])]
    model = tiny_model(nodes, [1, 10, 20, 20], inits)
    onnx.checker.check_model(model)
    lowering = build_and_check(model)  # several calls, each within 1e-4 of onnxruntime
    assert "shuffle_transpose: 2x2 stride-2 ConvTranspose 2" in lowering.graph
    assert "unscheduled" not in lowering.kernels.values()
