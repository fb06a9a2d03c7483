"""A padded edge after a conv or pool inside the graph (cpu/loops.fusable_epilogue): the pad
that TVM fuses into the kernel as its epilogue must write its padding on every call.

The shapes are issue 33's: each read uninitialized memory where 0 was right, so the values
changed from call to call (a first call in a fresh process often looked right).
"""

from __future__ import annotations

import numpy as np
from onnx import helper, numpy_helper

from conftest import build_and_check, legalized, random_const, tiny_model


def _pads(values: list[int]):
    return numpy_helper.from_array(np.array(values, np.int64), "pads")


def test_maxpool_then_same_upper_conv():
    rng = np.random.default_rng(0)
    model = tiny_model([
        helper.make_node("MaxPool", ["x"], ["p"], kernel_shape=[2, 2], strides=[1, 1]),
        helper.make_node("Conv", ["p", "w"], ["y"], kernel_shape=[2, 2], strides=[2, 2],
                         auto_pad="SAME_UPPER")],
        [1, 9, 10, 10], [random_const("w", (16, 9, 2, 2), rng)])
    build_and_check(model)


def test_conv1d_then_pad_at_the_end():
    rng = np.random.default_rng(1)
    model = tiny_model([
        helper.make_node("Conv", ["x", "w"], ["c"], kernel_shape=[1]),
        helper.make_node("Pad", ["c", "pads"], ["y"])],
        [1, 9, 12], [random_const("w", (16, 9, 1), rng), _pads([0, 0, 0, 0, 0, 1])])
    build_and_check(model)


def test_conv1d_then_same_upper_strided_conv1d():
    rng = np.random.default_rng(2)
    model = tiny_model([
        helper.make_node("Conv", ["x", "w"], ["c"], kernel_shape=[1]),
        helper.make_node("Conv", ["c", "w2"], ["y"], kernel_shape=[2], strides=[2],
                         auto_pad="SAME_UPPER")],
        [1, 9, 11], [random_const("w", (16, 9, 1), rng), random_const("w2", (16, 16, 2), rng)])
    build_and_check(model)


def test_conv_then_pad_of_channels_and_rows():
    """A constant Pad with a non-zero value on channels and rows (fuzz seed 77's kind)."""
    rng = np.random.default_rng(3)
    value = numpy_helper.from_array(np.float32(-1.0), "v")
    model = tiny_model([
        helper.make_node("Conv", ["x", "w"], ["c"], kernel_shape=[3, 3], pads=[1] * 4),
        helper.make_node("Relu", ["c"], ["r"]),
        helper.make_node("Pad", ["r", "pads", "v"], ["y"])],
        [2, 5, 7, 9], [random_const("w", (8, 5, 3, 3), rng),
                       _pads([0, 0, 1, 0, 0, 3, 0, 2]), value])
    build_and_check(model)


def test_crop_then_concat_smaller_than_the_conv():
    """A UNet-style skip: the conv's output cropped, then concatenated with a thin tensor. The
    concat writes fewer elements than the conv makes, and still fills some from elsewhere."""
    rng = np.random.default_rng(5)
    starts, ends = (numpy_helper.from_array(np.array(v, np.int64), n)
                    for n, v in (("starts", [1, 1]), ("ends", [9, 9])))
    axes = numpy_helper.from_array(np.array([2, 3], np.int64), "axes")
    model = tiny_model([
        helper.make_node("Conv", ["x", "w"], ["c"], kernel_shape=[1, 1]),
        helper.make_node("Slice", ["c", "starts", "ends", "axes"], ["s"]),
        helper.make_node("Conv", ["x", "w2"], ["t"], kernel_shape=[3, 3]),
        helper.make_node("Concat", ["s", "t"], ["y"], axis=1)],
        [1, 6, 10, 10], [random_const("w", (16, 6, 1, 1), rng),
                         random_const("w2", (2, 6, 3, 3), rng), starts, ends, axes])
    build_and_check(model)


def test_conv_depthwise_chain_then_pad():
    """The merged conv -> depthwise kernel (cpu/chains.py) with a Pad after the depthwise."""
    rng = np.random.default_rng(6)
    model = tiny_model([
        helper.make_node("Conv", ["x", "w"], ["c"], kernel_shape=[1, 1]),
        helper.make_node("Relu", ["c"], ["r"]),
        helper.make_node("Conv", ["r", "dw"], ["d"], kernel_shape=[3, 3], pads=[1] * 4,
                         group=32),
        helper.make_node("Pad", ["d", "pads"], ["y"])],
        [1, 16, 28, 28], [random_const("w", (32, 16, 1, 1), rng),
                          random_const("dw", (32, 1, 3, 3), rng),
                          _pads([0, 0, 0, 1, 0, 0, 2, 1])])
    lowering = build_and_check(model)
    assert "conv_depthwise" in lowering.kernels.values(), lowering.kernels


def test_pointwise_conv_walking_the_map_then_pad():
    """A 1x1 conv over a whole map (cpu/pixels.py's walk), then a Pad."""
    rng = np.random.default_rng(7)
    model = tiny_model([
        helper.make_node("Conv", ["x", "w"], ["c"], kernel_shape=[1, 1]),
        helper.make_node("Pad", ["c", "pads"], ["y"])],
        [1, 64, 13, 13], [random_const("w", (96, 64, 1, 1), rng),
                          _pads([0, 0, 1, 2, 0, 0, 0, 1])])
    build_and_check(model)


def test_same_shape_epilogue_stays_fused():
    """The rule must not fire on a conv whose epilogue (bias, ReLU) keeps its shape: the
    epilogue is still computed per tile, inside the conv's parallel loop."""
    from tvm import s_tir

    from edgec.compiler.codegen.cpu.loops import fusable_epilogue, top_blocks

    rng = np.random.default_rng(4)
    model = tiny_model([
        helper.make_node("Conv", ["x", "w", "b"], ["c"], kernel_shape=[3, 3], pads=[1] * 4),
        helper.make_node("Relu", ["c"], ["y"])],
        [1, 8, 6, 6], [random_const("w", (16, 8, 3, 3), rng), random_const("b", (16,), rng)])
    mod = legalized(model, [1, 8, 6, 6])
    func = next(f for gv, f in mod.functions_items() if "conv" in gv.name_hint)
    sch = s_tir.Schedule(func)
    blocks = [b for b, _ in top_blocks(sch)]
    red = next(i for i, (_, k) in enumerate(top_blocks(sch)) if "R" in k)
    after = blocks[red + 1:]
    assert after and fusable_epilogue(sch, blocks[red], after, 8) == after[-1:]
