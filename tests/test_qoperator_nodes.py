"""qoperator on single hand-built nodes: ConvInteger and MatMulInteger with zero points
(equal to onnxruntime), the 2^24 bound, QLinearGlobalAveragePool and QLinearAveragePool with
channels_last 0 and 1, QLinearSoftmax, QGemm with alpha and a float output, QLinearConv with
runtime weights. Tolerances as in test_qoperator.py: integer outputs equal, quantized outputs
within STEPS_ORT steps, float outputs within 1e-5 relative."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper
from test_qoperator import MS, STEPS_ORT, rewrite_checked

from edgec.compiler import frontend
from edgec.compiler.passes.qoperator import qoperator
from edgec.errors import EdgecError

from conftest import ort_run, save

RNG = np.random.default_rng(0)

def _single(node: onnx.NodeProto, inputs: list[tuple[str, int, list[int]]], out_type: int,
            inits: dict[str, np.ndarray], opsets=(("", 17),),
            out_rank: int = 4) -> onnx.ModelProto:
    """A one-node model; its output's dims are left unnamed (`out_rank` of them)."""
    graph = helper.make_graph(
        [node], "single", [helper.make_tensor_value_info(n, t, s) for n, t, s in inputs],
        [helper.make_tensor_value_info(node.output[0], out_type, [None] * out_rank)],
        [numpy_helper.from_array(np.asarray(v), k) for k, v in inits.items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid(d, v) for d, v in opsets])
    model.ir_version = 8
    return model


def _u8(shape, rng=RNG) -> np.ndarray:
    return rng.integers(0, 256, shape).astype(np.uint8)


@pytest.mark.parametrize("group, w_zp", [(1, "scalar"), (1, "per_channel"), (2, "scalar")])
def test_conv_integer_is_exact(group, w_zp):
    w = RNG.integers(0, 256, (4, 4 // group, 3, 3)).astype(np.uint8)
    zw = np.array(121, np.uint8) if w_zp == "scalar" else RNG.integers(100, 150, 4).astype(
        np.uint8)
    node = helper.make_node("ConvInteger", ["x", "w", "xz", "wz"], ["y"], name="ci",
                            pads=[1, 1, 1, 1], strides=[2, 1], group=group)
    model = _single(node, [("x", TensorProto.UINT8, [1, 4, 7, 6])], TensorProto.INT32,
                    {"w": w, "xz": np.array(131, np.uint8), "wz": zw})
    out, report = rewrite_checked(model)
    assert report.rewrites == {"ConvInteger": 1}
    for _ in range(3):
        x = _u8((1, 4, 7, 6))
        got = ort_run(out, {"x": x})[0]
        assert got.dtype == np.int32 and np.array_equal(got, _conv_integer_reference(model, x))


def _conv_integer_reference(model: onnx.ModelProto, x: np.ndarray) -> np.ndarray:
    """onnxruntime's ConvInteger on `model`; its kernel takes one weight zero point only, so a
    per-channel one is run output channel by output channel (groups of one channel's inputs)."""
    inits = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    if inits["wz"].size == 1:
        return ort_run(model, {"x": x})[0]
    assert all(a.name != "group" or a.i == 1 for a in model.graph.node[0].attribute)
    parts = []
    for o, zp in enumerate(inits["wz"]):
        one = onnx.ModelProto()
        one.CopyFrom(model)
        for t in one.graph.initializer:
            value = {"w": inits["w"][o:o + 1], "wz": np.array(zp)}.get(t.name)
            if value is not None:
                t.CopyFrom(numpy_helper.from_array(value, t.name))
        parts.append(ort_run(one, {"x": x})[0])
    return np.concatenate(parts, axis=1)


@pytest.mark.parametrize("b_type", [np.uint8, np.int8])
def test_matmul_integer_with_zero_points_is_exact(b_type):
    info = np.iinfo(b_type)
    b = RNG.integers(info.min, info.max + 1, (6, 5)).astype(b_type)
    bz = RNG.integers(-3, 4, 5).astype(b_type) if b_type == np.int8 else np.array(128, b_type)
    node = helper.make_node("MatMulInteger", ["x", "b", "az", "bz"], ["y"], name="mmi")
    model = _single(node, [("x", TensorProto.UINT8, [3, 6])], TensorProto.INT32,
                    {"b": b, "az": np.array(7, np.uint8), "bz": bz}, out_rank=2)
    out, _ = rewrite_checked(model)
    x = _u8((3, 6))
    want, got = ort_run(model, {"x": x})[0], ort_run(out, {"x": x})[0]
    assert np.array_equal(got, want)


def test_integer_sums_float32_cannot_hold_are_declined(tmp_path):
    # 64 x 3 x 3 products of up to 255 * 255: sums up to 3.7e7, past 2^24
    w = np.full((2, 64, 3, 3), 255, np.uint8)
    node = helper.make_node("ConvInteger", ["x", "w"], ["y"], name="big")
    model = _single(node, [("x", TensorProto.UINT8, [1, 64, 5, 5])], TensorProto.INT32, {"w": w})
    out, report = qoperator(model)
    assert not report.changed and "not below 2^24" in report.declined[0]
    assert [n.op_type for n in out.graph.node] == ["ConvInteger"]
    with pytest.raises(EdgecError, match=r"ConvInteger \(node big\) \[not rewritten: sums"):
        frontend.load(save(model, tmp_path / "big.onnx"))
    # a MatMulInteger whose right operand is a runtime tensor cannot be bounded: it stays, for
    # TVM's own int32 import
    mm = helper.make_node("MatMulInteger", ["x", "b"], ["y"], name="dyn")
    model = _single(mm, [("x", TensorProto.UINT8, [2, 3]), ("b", TensorProto.UINT8, [3, 4])],
                    TensorProto.INT32, {}, out_rank=2)
    out, report = qoperator(model)
    assert not report.changed and "cannot be bounded" in report.declined[0]


@pytest.mark.parametrize("channels_last", [0, 1])
def test_global_average_pool_channels_last(channels_last):
    shape = [1, 5, 6, 4] if channels_last else [1, 4, 5, 6]
    node = helper.make_node("QLinearGlobalAveragePool", ["x", "xs", "xz", "ys", "yz"], ["y"],
                            name="gap", domain=MS, channels_last=channels_last)
    inits = {"xs": np.array(0.05, np.float32), "xz": np.array(120, np.uint8),
             "ys": np.array(0.013, np.float32), "yz": np.array(117, np.uint8)}
    model = _single(node, [("x", TensorProto.UINT8, shape)], TensorProto.UINT8, inits,
                    opsets=(("", 17), (MS, 1)))
    out, _ = rewrite_checked(model)
    for _ in range(3):
        x = _u8(shape)
        want, got = ort_run(model, {"x": x})[0], ort_run(out, {"x": x})[0]
        assert got.shape == want.shape == ((1, 1, 1, 4) if channels_last else (1, 4, 1, 1))
        assert np.abs(got.astype(int) - want.astype(int)).max() <= STEPS_ORT


def test_qgemm_alpha_bias_and_float_output():
    node = helper.make_node("QGemm", ["a", "as", "az", "b", "bs", "bz", "c"], ["y"], name="qg",
                            domain=MS, alpha=0.5)
    inits = {"as": np.array(0.02, np.float32), "az": np.array(128, np.uint8),
             "b": RNG.integers(-127, 128, (6, 5)).astype(np.int8),
             "bs": RNG.uniform(0.01, 0.03, 5).astype(np.float32), "bz": np.zeros(5, np.int8),
             "c": RNG.integers(-5000, 5000, 5).astype(np.int32)}
    model = _single(node, [("a", TensorProto.UINT8, [3, 6])], TensorProto.FLOAT, inits,
                    opsets=(("", 17), (MS, 1)), out_rank=2)
    out, _ = rewrite_checked(model)
    a = _u8((3, 6))
    want, got = ort_run(model, {"a": a})[0], ort_run(out, {"a": a})[0]
    assert np.abs(got - want).max() <= 1e-5 * np.abs(want).max()


def test_qlinearconv_with_runtime_weights_converts():
    node = helper.make_node("QLinearConv", ["x", "xs", "xz", "w", "ws", "wz", "ys", "yz"], ["y"],
                            name="qc", pads=[1, 1, 1, 1])
    inits = {"xs": np.array(0.02, np.float32), "xz": np.array(128, np.uint8),
             "ws": np.array(0.01, np.float32), "wz": np.array(0, np.int8),
             "ys": np.array(0.05, np.float32), "yz": np.array(125, np.uint8)}
    model = _single(node, [("x", TensorProto.UINT8, [1, 3, 5, 5]),
                           ("w", TensorProto.INT8, [4, 3, 3, 3])], TensorProto.UINT8, inits)
    out, _ = rewrite_checked(model)
    feed = {"x": _u8((1, 3, 5, 5)), "w": RNG.integers(-127, 128, (4, 3, 3, 3)).astype(np.int8)}
    want, got = ort_run(model, feed)[0], ort_run(out, feed)[0]
    assert np.abs(got.astype(int) - want.astype(int)).max() <= STEPS_ORT


@pytest.mark.parametrize("channels_last", [0, 1])
def test_average_pool_channels_last(channels_last):
    shape = [1, 6, 7, 4] if channels_last else [1, 4, 6, 7]
    node = helper.make_node("QLinearAveragePool", ["x", "xs", "xz", "ys", "yz"], ["y"],
                            name="pool", domain=MS, channels_last=channels_last,
                            kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1])
    inits = {"xs": np.array(0.05, np.float32), "xz": np.array(120, np.uint8),
             "ys": np.array(0.013, np.float32), "yz": np.array(117, np.uint8)}
    model = _single(node, [("x", TensorProto.UINT8, shape)], TensorProto.UINT8, inits,
                    opsets=(("", 17), (MS, 1)))
    out, _ = rewrite_checked(model)
    x = _u8(shape)
    want, got = ort_run(model, {"x": x})[0], ort_run(out, {"x": x})[0]
    assert got.shape == want.shape == ((1, 3, 4, 4) if channels_last else (1, 4, 3, 4))
    assert np.abs(got.astype(int) - want.astype(int)).max() <= STEPS_ORT


@pytest.mark.parametrize("opset", [12, 13])
def test_softmax_over_the_last_axis(opset):
    node = helper.make_node("QLinearSoftmax", ["x", "xs", "xz", "ys", "yz"], ["y"], name="sm",
                            domain=MS, axis=-1, opset=opset)
    inits = {"xs": np.array(0.1, np.float32), "xz": np.array(128, np.uint8),
             "ys": np.array(1 / 256, np.float32), "yz": np.array(0, np.uint8)}
    model = _single(node, [("x", TensorProto.UINT8, [2, 3, 10])], TensorProto.UINT8, inits,
                    opsets=(("", 17), (MS, 1)), out_rank=3)
    out, _ = rewrite_checked(model)
    x = _u8((2, 3, 10))
    want, got = ort_run(model, {"x": x})[0], ort_run(out, {"x": x})[0]
    assert np.abs(got.astype(int) - want.astype(int)).max() <= STEPS_ORT
    # before opset 13 a Softmax over axis 1 of a 3-D input flattens [3, 10]: declined
    axis = next(a for a in model.graph.node[0].attribute if a.name == "axis")
    axis.i = 1
    _, report = qoperator(model)
    if opset < 13:
        assert not report.changed and "not known to be the last" in report.declined[0]
    else:
        assert report.rewrites == {"QLinearSoftmax": 1}
