"""unstack: variadic Max/Min/Sum/Mean as binary ops, so channels-last rewrites around them."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import helper, numpy_helper

from conftest import build_and_check, kernel_names, legalized, random_const, tiny_model


def _conv_then(op: str, extra: list[str], inits: dict):
    rng = np.random.default_rng(0)
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], kernel_shape=[3, 3], pads=[1] * 4),
             helper.make_node(op, ["c", *extra], ["y"])]
    consts = [random_const("w", (6, 5, 3, 3), rng)]
    consts += [numpy_helper.from_array(np.asarray(v, np.float32), k) for k, v in inits.items()]
    return tiny_model(nodes, [2, 5, 6, 7], consts)


@pytest.mark.parametrize("op", ["Max", "Min", "Sum", "Mean"])
def test_scalar_and_channel_operands(op):
    """GeM's Max(x, eps), and a per-channel operand broadcast over the map."""
    rng = np.random.default_rng(1)
    model = _conv_then(op, ["eps", "per_c"], {
        "eps": np.float32(1e-3), "per_c": rng.standard_normal((1, 6, 1, 1))})
    build_and_check(model)
    kernels = kernel_names(legalized(model, [2, 5, 6, 7]))
    assert kernels and not any("stack" in k for k in kernels), kernels


def test_other_reductions_untouched():
    """A ReduceMax over channels is no stack-and-reduce: it must still import and run."""
    model = _conv_then("ReduceMax", [], {})
    model.graph.node[1].attribute.extend([helper.make_attribute("axes", [1]),
                                          helper.make_attribute("keepdims", 1)])
    del model.graph.value_info[:]
    build_and_check(onnx.shape_inference.infer_shapes(model))
