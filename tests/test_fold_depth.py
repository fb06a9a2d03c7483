"""fold_depth on tiny graphs: a 3-D conv becomes a 2-D conv over depth-folded batch with its
depth taps stacked as channels, within 1e-5 of onnxruntime on the original (check_pass:
checker, op counts, idempotence) for depth strides, pads, dilations and batches; the convs it
must leave alone; and a C3D-style block through the whole `cpu` pipeline over several calls."""

from __future__ import annotations

import numpy as np
import pytest
from onnx import helper

from edgec.compiler.codegen.onnx_level.fold_depth import fold_depth

from conftest import build_and_check, check_pass, random_const, tiny_model

RNG = np.random.default_rng(0)


def _conv3d(shape: list[int], out: int, k: list[int], bias: bool = True, **attrs):
    inits = [random_const("w", (out, shape[1] // attrs.get("group", 1), *k), RNG)]
    inits += [random_const("b", (out,), RNG)] if bias else []
    node = helper.make_node("Conv", ["x", "w"] + (["b"] if bias else []), ["y"],
                            kernel_shape=k, **attrs)
    return tiny_model([node], shape, inits)


@pytest.mark.parametrize("shape, k, attrs", [
    ([1, 3, 8, 10, 10], [3, 3, 3], {"pads": [1] * 6}),
    ([2, 4, 7, 9, 8], [3, 3, 3], {"pads": [1] * 6, "strides": [2, 1, 2]}),
    ([1, 4, 9, 6, 6], [3, 1, 3], {"pads": [2, 0, 1, 0, 0, 1], "dilations": [2, 1, 1]}),
    ([1, 5, 4, 6, 6], [1, 3, 3], {"pads": [0, 1, 1, 0, 1, 1]}),
    ([1, 2, 6, 5, 5], [2, 2, 2], {"strides": [2, 2, 2]}),
])
@pytest.mark.parametrize("bias", [True, False])
def test_a_3d_conv_becomes_a_2d_conv(shape, k, attrs, bias):
    _, report = check_pass(fold_depth, _conv3d(shape, 6, k, bias, **attrs),
                           {"Conv": 1, "Slice": k[0], "Concat": int(k[0] > 1)})
    assert report.rewrites == {f"conv3d {'x'.join(map(str, k))}": 1}


@pytest.mark.parametrize("attrs, why", [({"group": 2}, "grouped"),
                                        ({"auto_pad": "SAME_UPPER"}, "auto_pad")])
def test_other_3d_convs_are_declined(attrs, why):
    out, report = fold_depth(_conv3d([1, 4, 6, 6, 6], 4, [3, 3, 3], **attrs))
    assert not report.changed and [n.op_type for n in out.graph.node] == ["Conv"]
    assert report.declined == [f"y: {why}"]


def test_2d_convs_are_not_its_business():
    model = tiny_model([helper.make_node("Conv", ["x", "w"], ["y"], kernel_shape=[3, 3])],
                       [1, 4, 8, 8], [random_const("w", (4, 4, 3, 3), RNG)])
    out, report = fold_depth(model)
    assert not report.changed and not report.declined


def test_a_c3d_block_through_the_cpu_pipeline():
    inits = [random_const("w1", (16, 3, 3, 3, 3), RNG), random_const("b1", (16,), RNG),
             random_const("w2", (32, 16, 3, 3, 3), RNG), random_const("b2", (32,), RNG)]
    nodes = [helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], kernel_shape=[3, 3, 3],
                              pads=[1] * 6, strides=[1, 2, 2]),
             helper.make_node("Relu", ["c1"], ["r1"]),
             helper.make_node("Conv", ["r1", "w2", "b2"], ["c2"], kernel_shape=[3, 3, 3],
                              pads=[1] * 6),
             helper.make_node("Relu", ["c2"], ["r2"]),
             helper.make_node("MaxPool", ["r2"], ["y"], kernel_shape=[2, 2, 2],
                              strides=[2, 2, 2])]
    lowering = build_and_check(tiny_model(nodes, [1, 3, 8, 24, 24], inits))
    assert "fold_depth: conv3d 3x3x3 2" in lowering.graph
    assert "unscheduled" not in lowering.kernels.values()
