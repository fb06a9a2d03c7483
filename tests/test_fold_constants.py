"""fold_constants: shape arithmetic on static shapes folds to initializers, exactly."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import helper, numpy_helper

from edgec.compiler.passes.fold_constants import fold_constants

from conftest import ort_run, tiny_model


def _flatten_by_shape(slicer: str) -> onnx.ModelProto:
    """y = Reshape(x, concat(shape(x)[:1], [-1])) with the batch dim taken by Gather or Slice."""
    inits = {"minus1": np.array([-1], np.int64), "i0": np.array([0], np.int64),
             "i1": np.array([1], np.int64)}
    take = (helper.make_node("Gather", ["s", "i0"], ["n"], axis=0) if slicer == "gather"
            else helper.make_node("Slice", ["s", "i0", "i1"], ["n"]))
    nodes = [helper.make_node("Shape", ["x"], ["s"]), take,
             helper.make_node("Concat", ["n", "minus1"], ["shape"], axis=0),
             helper.make_node("Reshape", ["x", "shape"], ["y"])]
    return tiny_model(nodes, (2, 3, 4, 4), inits, out_shape=[2, 48], infer=False)


@pytest.mark.parametrize("slicer", ["gather", "slice"])
def test_shape_chain_folds(slicer):
    model = _flatten_by_shape(slicer)
    folded, report = fold_constants(model)
    onnx.checker.check_model(folded, full_check=True)
    assert [n.op_type for n in folded.graph.node] == ["Reshape"]
    assert report.rewrites == {"Shape": 1, slicer.capitalize(): 1, "Concat": 1}
    shape = numpy_helper.to_array(
        next(t for t in folded.graph.initializer if t.name == folded.graph.node[0].input[1]))
    assert shape.tolist() == [2, -1]
    x = np.random.default_rng(0).standard_normal((2, 3, 4, 4)).astype(np.float32)
    np.testing.assert_array_equal(ort_run(folded, {"x": x})[0], ort_run(model, {"x": x})[0])


def test_idempotent():
    once, _ = fold_constants(_flatten_by_shape("gather"))
    twice, report = fold_constants(once)
    assert not report.changed
    assert twice.graph.SerializeToString() == once.graph.SerializeToString()


def test_does_not_fire_on_dynamic_shape():
    model = _flatten_by_shape("gather")
    model.graph.input[0].type.tensor_type.shape.dim[0].dim_param = "N"
    out, report = fold_constants(model)
    assert not report.changed
    assert [n.op_type for n in out.graph.node] == ["Shape", "Gather", "Concat", "Reshape"]


def test_keeps_dequantize_and_graph_outputs():
    inits = {"q": np.array([1, 2], np.int8), "s": np.array(0.5, np.float32)}
    nodes = [helper.make_node("DequantizeLinear", ["q", "s"], ["d"]),
             helper.make_node("Add", ["x", "d"], ["y"])]
    out, report = fold_constants(tiny_model(nodes, (2,), inits, out_shape=[2], infer=False))
    assert [n.op_type for n in out.graph.node] == ["DequantizeLinear", "Add"]
    assert not report.changed


def test_weight_arithmetic_folds():
    inits = {"w": np.arange(6, dtype=np.float32).reshape(2, 3), "k": np.float32(2.0)}
    nodes = [helper.make_node("Mul", ["w", "k"], ["w2"]),
             helper.make_node("Transpose", ["w2"], ["wt"]),
             helper.make_node("MatMul", ["x", "wt"], ["y"])]
    model = tiny_model(nodes, (1, 3), inits, out_shape=[1, 2], infer=False)
    out, report = fold_constants(model)
    assert [n.op_type for n in out.graph.node] == ["MatMul"]
    assert report.rewrites == {"Mul": 1, "Transpose": 1}
    x = np.ones((1, 3), np.float32)
    np.testing.assert_array_equal(ort_run(out, {"x": x})[0], ort_run(model, {"x": x})[0])
