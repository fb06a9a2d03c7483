"""shuffle_transpose on tiny graphs: a strided ConvTranspose becomes a stride-1 Conv +
DepthToSpace, equal to onnxruntime on the original within 1e-5 (check_pass: checker, op
counts, idempotence) for the kernel/stride/pad combinations of real decoders; the cases it
must decline, each with its reason; and DBNet- and DCGAN-style decoders through the whole
`cpu` pipeline, right over several calls."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import helper

from edgec.compiler.codegen.onnx_level.shuffle_transpose import shuffle_transpose

from conftest import build_and_check, check_pass, random_const, tiny_model

RNG = np.random.default_rng(0)


def _transpose(c_in: int, c_out: int, k: int, stride: int, bias: bool = True, pad: int = 0,
               **attrs):
    inits = [random_const("w", (c_in, c_out, k, k), RNG)]
    inits += [random_const("b", (c_out,), RNG)] if bias else []
    node = helper.make_node("ConvTranspose", ["x", "w"] + (["b"] if bias else []), ["y"],
                            kernel_shape=[k, k], strides=[stride, stride], pads=[pad] * 4,
                            **attrs)
    return tiny_model([node], [1, c_in, 6, 7], inits)


@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("c_in, c_out, k, s, p, conv_k", [
    (10, 10, 2, 2, 0, 1), (10, 1, 2, 2, 0, 1), (3, 5, 3, 3, 0, 1), (8, 4, 4, 4, 0, 1),
    (6, 4, 4, 2, 1, 3),  # DCGAN-style: a 3x3 conv, 2.25x the MACs
    (5, 3, 6, 2, 2, 3), (4, 6, 6, 3, 0, 2), (5, 5, 3, 1, 1, 3)])
def test_strided_transpose_becomes_a_conv_and_a_shuffle(c_in, c_out, k, s, p, conv_k, bias):
    shuffles = 1 if s > 1 else 0
    out, report = check_pass(shuffle_transpose, _transpose(c_in, c_out, k, s, bias, pad=p),
                             {"ConvTranspose": 0, "Conv": 1, "DepthToSpace": shuffles})
    assert report.rewrites == {f"{k}x{k} stride-{s} pad-{p} ConvTranspose": 1}
    inits = {t.name: list(t.dims) for t in out.graph.initializer}
    conv = next(n for n in out.graph.node if n.op_type == "Conv")
    assert inits[conv.input[1]] == [c_out * s * s, c_in, conv_k, conv_k]


@pytest.mark.parametrize("k, stride, attrs, why", [
    (3, 2, {}, "kernel 3 - 2 x pad 0 is not a positive multiple of stride 2"),
    (3, 2, {"pads": [1, 1, 1, 1]}, "kernel 3 - 2 x pad 1 is not a positive multiple of stride 2"),
    (2, 2, {"pads": [0, 0, 1, 1]}, "unequal pads [0, 0, 1, 1]"),
    (2, 2, {"output_padding": [1, 1]}, "output padding"),
    (2, 2, {"group": 2}, "grouped"),
    (2, 2, {"dilations": [2, 2]}, "dilated"),
])
def test_other_transposed_convs_are_declined_with_a_reason(k, stride, attrs, why):
    c_in = 4
    pads = attrs.pop("pads", None)
    model = _transpose(c_in, 4 // attrs.get("group", 1), k, stride, **attrs)
    if pads is not None:
        next(a for a in model.graph.node[0].attribute if a.name == "pads").ints[:] = pads
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


@pytest.mark.parametrize("k, p", [(2, 0), (4, 1)])  # DBNet's, DCGAN's
def test_a_decoder_through_the_cpu_pipeline(k, p):
    inits = [random_const("w1", (16, 16, k, k), RNG), random_const("b1", (16,), RNG),
             random_const("w2", (16, 1, k, k), RNG), random_const("b2", (1,), RNG)]
    up = {"kernel_shape": [k, k], "strides": [2, 2], "pads": [p] * 4}
    nodes = [helper.make_node("ConvTranspose", ["x", "w1", "b1"], ["t1"], **up),
             helper.make_node("Relu", ["t1"], ["r1"]),
             helper.make_node("ConvTranspose", ["r1", "w2", "b2"], ["t2"], **up),
             helper.make_node("Sigmoid", ["t2"], ["y"])]
    model = tiny_model(nodes, [1, 16, 20, 20], inits)
    onnx.checker.check_model(model)
    lowering = build_and_check(model)  # several calls, each within 1e-4 of onnxruntime
    assert f"shuffle_transpose: {k}x{k} stride-2 pad-{p} ConvTranspose 2" in lowering.graph
    assert "unscheduled" not in lowering.kernels.values()
