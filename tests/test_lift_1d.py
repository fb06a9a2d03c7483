"""lift_1d on tiny graphs: 1-D convs and pools become 2-D ones over a height of 1, within 1e-5
of onnxruntime on the original (check_pass: checker, op counts, idempotence), the squeezes
between them sunk and cancelled, both Squeeze forms (opset 11's attribute, 13's input); the
ops it must leave alone; and a time-series block through the whole `cpu` pipeline, its convs
2-D kernels on edgec's conv rule, over several calls."""

from __future__ import annotations

import numpy as np
import pytest
from onnx import helper

from edgec.compiler.codegen.onnx_level.lift_1d import lift_1d

from conftest import build_and_check, check_pass, kernel_names, random_const, tiny_model

RNG = np.random.default_rng(0)


def _conv1d(x: str, y: str, w: str, **attrs) -> helper.NodeProto:
    return helper.make_node("Conv", [x, w, f"{w}_b"], [y], **attrs)


def _consts(*specs: tuple[str, tuple[int, ...]]) -> list:
    out = []
    for name, shape in specs:
        out += [random_const(name, shape, RNG), random_const(f"{name}_b", shape[:1], RNG)]
    return out


@pytest.mark.parametrize("attrs, w_shape", [
    ({"pads": [3, 3]}, (8, 6, 7)),
    ({"pads": [2, 1], "strides": [2]}, (8, 6, 5)),
    ({"pads": [2, 2], "dilations": [2]}, (12, 6, 3)),
    ({"group": 3, "pads": [1, 1]}, (9, 2, 3)),
    ({"group": 6}, (6, 1, 3)),
])
def test_a_1d_conv_becomes_a_2d_conv(attrs, w_shape):
    model = tiny_model([_conv1d("x", "y", "w", kernel_shape=[w_shape[2]], **attrs)],
                       [2, 6, 40], _consts(("w", w_shape)))
    _, report = check_pass(lift_1d, model, {"Conv": 1, "Unsqueeze": 1, "Squeeze": 1})
    assert report.rewrites == {"Conv 1-D": 1}


def _block(opset: int = 17):
    """conv -> ReLU -> max pool -> conv -> scalar Mul -> Tanh -> avg pool -> global average
    pool -> Flatten -> Gemm: the squeezes sink to the Flatten, which reads the 4-D tensor."""
    nodes = [_conv1d("x", "c1", "w1", kernel_shape=[5], pads=[2, 2]),
             helper.make_node("Relu", ["c1"], ["r1"]),
             helper.make_node("MaxPool", ["r1"], ["p1"], kernel_shape=[2], strides=[2]),
             _conv1d("p1", "c2", "w2", kernel_shape=[3], pads=[2, 2], dilations=[2]),
             helper.make_node("Mul", ["c2", "half"], ["m2"]),
             helper.make_node("Tanh", ["m2"], ["t2"]),
             helper.make_node("AveragePool", ["t2"], ["p2"], kernel_shape=[3], pads=[1, 1],
                              strides=[2], count_include_pad=0),
             helper.make_node("GlobalAveragePool", ["p2"], ["g"]),
             helper.make_node("Flatten", ["g"], ["f"], axis=1),
             helper.make_node("Gemm", ["f", "fc", "fc_b"], ["y"], transB=1)]
    inits = _consts(("w1", (16, 4, 5)), ("w2", (24, 16, 3)), ("fc", (5, 24)))
    inits.append(helper.make_tensor("half", 1, [], [0.5]))
    model = tiny_model(nodes, [1, 4, 64], inits)
    model.opset_import[0].version = opset
    return model


@pytest.mark.parametrize("opset", [11, 17])
def test_a_1d_block_stays_2d_from_its_first_unsqueeze(opset):
    out, report = check_pass(lift_1d, _block(opset),
                             {"Conv": 2, "Unsqueeze": 1, "Squeeze": 0, "Flatten": 1})
    assert report.rewrites == {"Conv 1-D": 2, "MaxPool 1-D": 1, "AveragePool 1-D": 1}
    unsqueeze = next(n for n in out.graph.node if n.op_type == "Unsqueeze")
    assert (len(unsqueeze.input) == 2) == (opset >= 13)  # axes an input from opset 13


def test_a_squeeze_sinks_through_batchnorm():
    stats = {f"bn_{k}": np.abs(RNG.standard_normal(8)).astype(np.float32) + 0.5
             for k in ("scale", "bias", "mean", "var")}
    nodes = [_conv1d("x", "c1", "w1", kernel_shape=[3], pads=[1, 1]),
             helper.make_node("BatchNormalization", ["c1", *stats], ["n1"]),
             helper.make_node("Relu", ["n1"], ["r1"]),
             _conv1d("r1", "y", "w2", kernel_shape=[3], pads=[1, 1])]
    inits = _consts(("w1", (8, 4, 3)), ("w2", (8, 8, 3)))
    inits += [helper.make_tensor(k, 1, [8], v) for k, v in stats.items()]
    check_pass(lift_1d, tiny_model(nodes, [1, 4, 16], inits),
               {"Unsqueeze": 1, "Squeeze": 1, "BatchNormalization": 1})


def test_a_squeezed_tensor_read_twice_stays_correct():
    # a residual 1-D block: the conv's squeezed output feeds both the ReLU and the Add
    nodes = [_conv1d("x", "c1", "w1", kernel_shape=[3], pads=[1, 1]),
             helper.make_node("Relu", ["c1"], ["r1"]),
             _conv1d("r1", "c2", "w2", kernel_shape=[3], pads=[1, 1]),
             helper.make_node("Add", ["c2", "c1"], ["y"])]
    model = tiny_model(nodes, [1, 8, 20], _consts(("w1", (8, 8, 3)), ("w2", (8, 8, 3))))
    check_pass(lift_1d, model, {"Conv": 2})


@pytest.mark.parametrize("axis", [-2, -1, 0, 2])
def test_a_flatten_keeps_its_meaning(axis):
    nodes = [_conv1d("x", "c", "w", kernel_shape=[3], pads=[1, 1]),
             helper.make_node("Relu", ["c"], ["r"]),
             helper.make_node("Flatten", ["r"], ["y"], axis=axis)]
    squeezes = 0 if axis >= 0 else 1  # a negative axis would move with the added one
    check_pass(lift_1d, tiny_model(nodes, [2, 4, 10], _consts(("w", (6, 4, 3)))),
               {"Conv": 1, "Squeeze": squeezes, "Flatten": 1})


@pytest.mark.parametrize("attrs", [{"strides": [2], "dilations": [2]},
                                   {"strides": [2], "pads": [1, 1], "output_padding": [1]},
                                   {"group": 2, "pads": [1, 0]}])
def test_a_1d_conv_transpose_becomes_2d(attrs):
    # weights [C_in, C_out / g, k], bias [C_out]: 6 -> 4 channels
    inits = [random_const("w", (6, 4 // attrs.get("group", 1), 3), RNG),
             random_const("b", (4,), RNG)]
    model = tiny_model([helper.make_node("ConvTranspose", ["x", "w", "b"], ["y"],
                                         kernel_shape=[3], **attrs)], [1, 6, 11], inits)
    _, report = check_pass(lift_1d, model, {"ConvTranspose": 1, "Unsqueeze": 1, "Squeeze": 1})
    assert report.rewrites == {"ConvTranspose 1-D": 1}


def test_a_conv_chain_into_a_transpose_through_the_cpu_pipeline():
    # convs, a strided dilated 1-D ConvTranspose, an average pool: TVM legalizes no
    # channels-last 1-D transpose, so the chain must reach it 2-D (fuzz.py seed 47)
    nodes = [_conv1d("x", "c1", "w1", kernel_shape=[3], pads=[1, 1]),
             _conv1d("c1", "c2", "w2", kernel_shape=[3], pads=[1, 1]),
             helper.make_node("ConvTranspose", ["c2", "w3", "w3_b"], ["t"], kernel_shape=[3],
                              strides=[2], dilations=[2]),
             helper.make_node("AveragePool", ["t"], ["y"], kernel_shape=[2], strides=[2])]
    inits = _consts(("w1", (8, 4, 3)), ("w2", (8, 8, 3)))
    inits += [random_const("w3", (8, 6, 3), RNG), random_const("w3_b", (6,), RNG)]
    build_and_check(tiny_model(nodes, [1, 4, 20], inits))


def test_what_it_leaves_alone():
    nodes = [helper.make_node("Identity", ["w"], ["w_var"]),
             helper.make_node("Conv", ["x", "w_var"], ["c"], kernel_shape=[3]),
             helper.make_node("MaxPool", ["c"], ["y"], kernel_shape=[2], auto_pad="SAME_UPPER")]
    out, report = lift_1d(tiny_model(nodes, [1, 4, 16], [random_const("w", (4, 4, 3), RNG)]))
    assert not report.changed
    assert report.declined == ["c: weights are not a constant", "y: auto_pad"]
    model2d = tiny_model([helper.make_node("Conv", ["x", "w"], ["y"], kernel_shape=[3, 3])],
                         [1, 4, 8, 8], [random_const("w", (4, 4, 3, 3), RNG)])
    out, report = lift_1d(model2d)
    assert not report.changed and not report.declined


def test_a_time_series_block_through_the_cpu_pipeline():
    from edgec import targets
    from edgec.compiler import codegen

    model = _block()
    build_and_check(model)  # within 1e-4 relative of onnxruntime over several calls
    lowering = codegen.Lowering()
    lowered = codegen.lower(model, targets.get("host"), {"x": [1, 4, 64]}, lowering)
    convs = [k for k in kernel_names(lowered) if "conv" in k]
    assert convs and all("conv2d" in k for k in convs), convs
    assert all(lowering.kernels[k] != "default" for k in convs), lowering.kernels
