"""merge_moves: a transpose/reshape kernel is merged into the conv reading it; tiny graphs from
onnx.helper, outputs against onnxruntime (ORT_DISABLE_ALL) within 1e-4 relative."""

from __future__ import annotations

import numpy as np
import pytest
from onnx import helper, numpy_helper

from edgec.compiler.codegen.relax_level.merge_moves import merge_moves

from conftest import build_and_check, kernel_names, legalized, random_const, tiny_model

# These tests are about the direct conv schedules (and what merges into them).
pytestmark = pytest.mark.usefixtures("direct_convs")

RNG = np.random.default_rng(0)


def _first_conv(bias: bool, group: int, stride: int, dilation: int):
    cin = 4 if group > 1 else 3
    nodes = [helper.make_node("Conv", ["x", "w", *(["b"] if bias else [])], ["c"],
                              kernel_shape=[3, 3], strides=[stride] * 2, group=group,
                              dilations=[dilation] * 2, pads=[dilation] * 4),
             helper.make_node("Relu", ["c"], ["y"])]
    inits = [random_const("w", (16, cin // group, 3, 3), RNG)]
    inits += [random_const("b", (16,), RNG)] if bias else []
    return tiny_model(nodes, [1, cin, 32, 32], inits)


@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("group, stride, dilation", [(1, 1, 1), (1, 2, 1), (2, 1, 1), (1, 1, 2)])
def test_input_transpose_merges_into_first_conv(bias, group, stride, dilation):
    # channels-last puts an NCHW -> NHWC transpose in front of the conv; the conv reads x
    lowering = build_and_check(_first_conv(bias, group, stride, dilation))
    convs = {k: v for k, v in lowering.kernels.items() if "conv" in k}
    assert len(convs) == 1, lowering.kernels
    name, rule = next(iter(convs.items()))
    assert name.startswith("transpose") and rule == "reduction_tile", lowering.kernels
    # what is left is the NHWC -> NCHW transpose of the output: nothing reads it
    assert list(lowering.kernels.values()).count("elementwise") == 1, lowering.kernels


def _shuffle():
    """conv -> channel shuffle (reshape, transpose, reshape) -> conv, as in ShuffleNetV2."""
    shapes = {"s1": [1, 2, 8, 14, 14], "s2": [1, 16, 14, 14]}
    nodes = [helper.make_node("Conv", ["x", "w1"], ["c"], kernel_shape=[1, 1]),
             helper.make_node("Reshape", ["c", "s1"], ["r"]),
             helper.make_node("Transpose", ["r"], ["t"], perm=[0, 2, 1, 3, 4]),
             helper.make_node("Reshape", ["t", "s2"], ["u"]),
             helper.make_node("Conv", ["u", "w2"], ["y"], kernel_shape=[3, 3], pads=[1] * 4)]
    inits = [random_const("w1", (16, 16, 1, 1), RNG), random_const("w2", (16, 16, 3, 3), RNG)]
    inits += [numpy_helper.from_array(np.array(v, np.int64), k) for k, v in shapes.items()]
    return tiny_model(nodes, [1, 16, 14, 14], inits)


def test_channel_shuffle_merges_into_the_conv_reading_it():
    lowering = build_and_check(_shuffle())
    shuffled = [k for k in lowering.kernels if "reshape" in k]
    assert len(shuffled) == 1 and "conv2d" in shuffled[0], lowering.kernels
    assert lowering.kernels[shuffled[0]] == "reduction_tile"


def test_concat_before_a_conv_does_not_merge():
    # two inputs: inlined into the conv it would cost a select per load
    nodes = [helper.make_node("Conv", ["x", "w1"], ["a"], kernel_shape=[1, 1]),
             helper.make_node("Conv", ["x", "w3"], ["b"], kernel_shape=[3, 3], pads=[1] * 4),
             helper.make_node("Concat", ["a", "b"], ["c"], axis=1),
             helper.make_node("Conv", ["c", "w2"], ["y"], kernel_shape=[1, 1])]
    inits = [random_const("w1", (16, 16, 1, 1), RNG), random_const("w3", (16, 16, 3, 3), RNG),
             random_const("w2", (16, 32, 1, 1), RNG)]
    lowering = build_and_check(tiny_model(nodes, [1, 16, 14, 14], inits))
    assert [k for k in lowering.kernels if "concatenate" in k] == ["concatenate1"], \
        lowering.kernels


def test_arithmetic_before_a_conv_does_not_merge():
    # x * x is one input but not a move: inlined, it would be recomputed per channel tile
    nodes = [helper.make_node("Mul", ["x", "x"], ["m"]),
             helper.make_node("Conv", ["m", "w2"], ["y"], kernel_shape=[1, 1])]
    inits = [random_const("w2", (16, 16, 1, 1), RNG)]
    lowering = build_and_check(tiny_model(nodes, [1, 16, 14, 14], inits))
    assert any("multiply" in k and "conv" not in k for k in lowering.kernels), lowering.kernels


def test_merging_twice_changes_nothing():
    import tvm

    mod = legalized(_shuffle(), [1, 16, 14, 14])
    once = merge_moves(mod)
    assert len(kernel_names(once)) == len(kernel_names(mod)) - 2  # input + shuffle
    tvm.ir.assert_structural_equal(merge_moves(once), once)


def test_rejected_merge_keeps_the_move_kernel():
    import tvm

    mod = legalized(_shuffle(), [1, 16, 14, 14])
    seen = []
    kept = merge_moves(mod, accept=lambda f: seen.append(f) or False)
    assert len(seen) == 2
    tvm.ir.assert_structural_equal(kept, mod)
