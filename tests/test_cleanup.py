"""cleanup on tiny graphs: op counts, numerics vs onnxruntime (ORT_DISABLE_ALL), the checker,
cases that must not fire, and idempotence."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from edgec.compiler.passes import cleanup

from conftest import ort_run, tiny_model

RNG = np.random.default_rng(1)


def _run(model: onnx.ModelProto) -> tuple[list[str], object]:
    out, report = cleanup(model)
    onnx.checker.check_model(out, full_check=True)
    x_shape = [d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim]
    x = RNG.standard_normal(x_shape).astype(np.float32)
    want, got = ort_run(model, {"x": x})[0], ort_run(out, {"x": x})[0]
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6 * np.abs(want).max())
    again, second = cleanup(out)
    assert not second.changed and again.graph.SerializeToString() == out.graph.SerializeToString()
    return [n.op_type for n in out.graph.node], report


def test_dropout_and_identity_removed():
    nodes = [helper.make_node("Relu", ["x"], ["a"]),
             helper.make_node("Dropout", ["a", "ratio"], ["b"]),
             helper.make_node("Identity", ["b"], ["c"]),
             helper.make_node("Sigmoid", ["c"], ["y"])]
    ops, report = _run(tiny_model(nodes, (2, 3), {"ratio": np.float32(0.5)}))
    assert ops == ["Relu", "Sigmoid"]
    assert report.rewrites == {"dropout removed": 1, "identity removed": 1}


def test_identity_feeding_graph_output_keeps_the_output_name():
    nodes = [helper.make_node("Relu", ["x"], ["a"]), helper.make_node("Identity", ["a"], ["y"])]
    ops, _ = _run(tiny_model(nodes, (4,)))
    assert ops == ["Relu"]


def test_identity_between_graph_input_and_output_must_stay():
    ops, report = _run(tiny_model([helper.make_node("Identity", ["x"], ["y"])], (4,)))
    assert ops == ["Identity"] and "graph input to a graph output" in report.declined[0]


def test_dropout_with_used_mask_stays():
    nodes = [helper.make_node("Dropout", ["x"], ["a", "mask"]),
             helper.make_node("Cast", ["mask"], ["m"], to=TensorProto.FLOAT),
             helper.make_node("Add", ["a", "m"], ["y"])]
    ops, _ = _run(tiny_model(nodes, (3,)))
    assert "Dropout" in ops


@pytest.mark.parametrize("pads", [[0, 0, 1, 1, 0, 0, 1, 1], [0, 0, 2, 0, 0, 0, 1, 3]])
@pytest.mark.parametrize("own_pads", [[0, 0, 0, 0], [1, 1, 1, 1]])
@pytest.mark.parametrize("stride, dilation, group", [(1, 1, 1), (2, 2, 2)])
def test_pad_fuses_into_conv(pads, own_pads, stride, dilation, group):
    nodes = [helper.make_node("Pad", ["x", "pads"], ["p"], mode="constant"),
             helper.make_node("Conv", ["p", "w", "b"], ["y"], pads=own_pads,
                              strides=[stride] * 2, dilations=[dilation] * 2, group=group)]
    inits = {"pads": np.array(pads, np.int64),
             "w": RNG.standard_normal((4, 4 // group, 3, 3)).astype(np.float32),
             "b": RNG.standard_normal(4).astype(np.float32)}
    ops, report = _run(tiny_model(nodes, (1, 4, 8, 8), inits))
    assert ops == ["Conv"] and report.rewrites == {"pad->conv": 1}


@pytest.mark.parametrize("own_pads, include, fires", [
    ([0, 0, 0, 0], 0, True), ([1, 1, 1, 1], 1, True), ([1, 1, 1, 1], 0, False)])
def test_pad_into_average_pool(own_pads, include, fires):
    nodes = [helper.make_node("Pad", ["x", "pads"], ["p"]),
             helper.make_node("AveragePool", ["p"], ["y"], kernel_shape=[3, 3], pads=own_pads,
                              count_include_pad=include)]
    ops, _ = _run(tiny_model(nodes, (1, 2, 6, 6),
                             {"pads": np.array([0, 0, 1, 1, 0, 0, 1, 1], np.int64)}))
    assert (ops == ["AveragePool"]) == fires


@pytest.mark.parametrize("case", ["maxpool", "value", "reflect", "channel"])
def test_pad_must_not_fuse(case):
    pads = [0, 1, 1, 1, 0, 0, 1, 1] if case == "channel" else [0, 0, 1, 1, 0, 0, 1, 1]
    inits = {"pads": np.array(pads, np.int64), "v": np.float32(0.5 if case == "value" else 0),
             "w": RNG.standard_normal((2, 3 if case == "channel" else 2, 3, 3)).astype(
                 np.float32)}
    pad = helper.make_node("Pad", ["x", "pads", "v"], ["p"],
                           mode="reflect" if case == "reflect" else "constant")
    user = (helper.make_node("MaxPool", ["p"], ["y"], kernel_shape=[2, 2]) if case == "maxpool"
            else helper.make_node("Conv", ["p", "w"], ["y"]))
    if case == "maxpool":
        del inits["w"]
    ops, _ = _run(tiny_model([pad, user], (1, 2, 6, 6), inits))
    assert "Pad" in ops


def test_inverse_transposes_cancel_and_others_do_not():
    nodes = [helper.make_node("Transpose", ["x"], ["a"], perm=[0, 2, 3, 1]),
             helper.make_node("Transpose", ["a"], ["b"], perm=[0, 3, 1, 2]),
             helper.make_node("Relu", ["b"], ["c"]),
             helper.make_node("Transpose", ["c"], ["d"], perm=[0, 2, 3, 1]),
             helper.make_node("Transpose", ["d"], ["y"], perm=[0, 2, 3, 1])]
    ops, report = _run(tiny_model(nodes, (1, 2, 3, 4)))
    assert ops == ["Relu", "Transpose", "Transpose"]
    assert report.rewrites == {"transpose pair removed": 1}


def test_noop_reshape_removed_real_one_kept():
    nodes = [helper.make_node("Reshape", ["x", "same"], ["a"]),
             helper.make_node("Reshape", ["a", "flat"], ["y"])]
    inits = {"same": np.array([2, 3, 4], np.int64), "flat": np.array([2, 12], np.int64)}
    ops, report = _run(tiny_model(nodes, (2, 3, 4), inits))
    assert ops == ["Reshape"] and report.rewrites["reshape removed"] == 1


def test_constant_chain_folds_and_dead_nodes_go():
    nodes = [helper.make_node("Constant", [], ["k"], value=numpy_helper.from_array(
                 np.float32(2.0))),
             helper.make_node("Mul", ["x", "k"], ["y"]),
             helper.make_node("Relu", ["x"], ["unused"])]
    ops, report = _run(tiny_model(nodes, (3,)))
    assert ops == ["Mul"]
    assert report.rewrites == {"constant folded": 1, "dead nodes removed": 1}
