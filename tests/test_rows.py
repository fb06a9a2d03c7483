"""cpu/rows.py: softmax and layer norm over the innermost axis (blocks over the same rows,
some reducing them) take the row_reduction rule and match onnxruntime (ORT_DISABLE_ALL) within
1e-4 relative on three calls (conftest.build_and_check); a reduction over other axes does not."""

from __future__ import annotations

import numpy as np
import pytest
from onnx import helper

from conftest import build_and_check, tiny_model


@pytest.mark.parametrize("shape", [[2, 24, 97], [1, 6, 32]])
def test_softmax_takes_the_row_reduction_rule(shape):
    """Four blocks (max, exp, sum, divide); 97 classes (scalar inner loops), 32 (vectors)."""
    model = tiny_model([helper.make_node("Softmax", ["x"], ["y"], axis=-1)], shape)
    lowering = build_and_check(model)
    assert list(lowering.kernels.values()) == ["row_reduction"], lowering.kernels


@pytest.mark.parametrize("shape", [[1, 10, 48], [2, 5, 7, 33]])
def test_layer_norm_takes_the_row_reduction_rule(shape):
    """Sum, mean (a block over the rows alone), variance sum, normalize."""
    rng = np.random.default_rng(0)
    c = shape[-1]
    model = tiny_model(
        [helper.make_node("LayerNormalization", ["x", "s", "b"], ["y"], axis=-1)], shape,
        {"s": rng.uniform(0.5, 1.5, c).astype(np.float32),
         "b": rng.uniform(-1.0, 1.0, c).astype(np.float32)})
    lowering = build_and_check(model)
    assert list(lowering.kernels.values()) == ["row_reduction"], lowering.kernels


def test_reduction_over_the_map_is_not_a_row_reduction():
    """InstanceNormalization reduces H x W, not one innermost axis: the rule declines it."""
    rng = np.random.default_rng(0)
    model = tiny_model(
        [helper.make_node("InstanceNormalization", ["x", "s", "b"], ["y"])], [1, 8, 6, 6],
        {"s": rng.uniform(0.5, 1.5, 8).astype(np.float32),
         "b": rng.uniform(-0.2, 0.2, 8).astype(np.float32)})
    lowering = build_and_check(model)
    assert "row_reduction" not in lowering.kernels.values(), lowering.kernels
