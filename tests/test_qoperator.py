"""qoperator on whole models: onnxruntime's own quantize_static (QOperator form) and
quantize_dynamic output rewritten into QDQ and run in onnxruntime against the original,
compiled by edgec against the original; declines and unknown ops named by the frontend; a
second run changing nothing (single hand-built nodes: test_qoperator_nodes.py).

Tolerances. Integer ops (ConvInteger, MatMulInteger) are compared for equality. Quantized
outputs are compared in steps of the output's scale: onnxruntime's QLinear kernels sum in
int32 and requantize with a fixed-point or float multiplier, the QDQ graph rounds float32
products and sums, so an element whose scaled sum lies within that rounding of a
half-integer may round the other way: one step (STEPS_ORT). The compiled artifact requantizes
in its own order again (its int8 convs sum in int32 and scale once, its other layers run the
QDQ graph in float32): two steps (STEPS_COMPILED) for a rounding flip that a following layer
carries on.
"""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from edgec import runtime
from edgec.compiler import frontend
from edgec.compiler.passes.qoperator import QOPS, qoperator
from edgec.errors import EdgecError

from conftest import ort_run, save

STEPS_ORT = 1
STEPS_COMPILED = 2
RNG = np.random.default_rng(0)
MS = "com.microsoft"


def _float_cnn(kind: str) -> onnx.ModelProto:
    """Tiny float CNNs on x [1, 3, 8, 8]: 'residual' (Conv+Relu, depthwise Conv, Add, Sigmoid,
    Concat, AveragePool, LeakyRelu, GlobalAveragePool, Gemm, MatMul), 'mul' (Conv, Mul of two
    branches, GlobalAveragePool, MatMul head)."""
    rng = np.random.default_rng(1)

    def w(name, shape, s=0.3):
        return numpy_helper.from_array((rng.standard_normal(shape) * s).astype(np.float32), name)

    mk = helper.make_node
    if kind == "residual":
        nodes = [mk("Conv", ["x", "w1", "b1"], ["c1"], pads=[1] * 4), mk("Relu", ["c1"], ["r1"]),
                 mk("Conv", ["r1", "w2", "b2"], ["c2"], pads=[1] * 4, group=8),
                 mk("Add", ["c2", "r1"], ["a"]), mk("Sigmoid", ["a"], ["s"]),
                 mk("Concat", ["s", "a"], ["cat"], axis=1),
                 mk("AveragePool", ["cat"], ["ap"], kernel_shape=[2, 2], strides=[2, 2]),
                 mk("LeakyRelu", ["ap"], ["lr"], alpha=0.1),
                 mk("GlobalAveragePool", ["lr"], ["g"]), mk("Flatten", ["g"], ["f"]),
                 mk("Gemm", ["f", "w3", "b3"], ["gm"], transB=1), mk("MatMul", ["gm", "w4"], ["y"])]
        inits = [w("w1", (8, 3, 3, 3)), w("b1", (8,)), w("w2", (8, 1, 3, 3)), w("b2", (8,)),
                 w("w3", (10, 16)), w("b3", (10,)), w("w4", (10, 5))]
        out = [1, 5]
    else:
        nodes = [mk("Conv", ["x", "w1", "b1"], ["c1"], pads=[1] * 4, strides=[2, 2]),
                 mk("Relu", ["c1"], ["r1"]), mk("Conv", ["x", "w2"], ["c2"], strides=[2, 2]),
                 mk("Mul", ["r1", "c2"], ["m"]), mk("GlobalAveragePool", ["m"], ["g"]),
                 mk("Flatten", ["g"], ["f"]), mk("MatMul", ["f", "w3"], ["y"])]
        inits = [w("w1", (6, 3, 3, 3)), w("b1", (6,)), w("w2", (6, 3, 2, 2)), w("w3", (6, 4))]
        out = [1, 4]
    graph = helper.make_graph(nodes, kind, [helper.make_tensor_value_info(
        "x", TensorProto.FLOAT, [1, 3, 8, 8])], [helper.make_tensor_value_info(
            "y", TensorProto.FLOAT, out)], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


def _quantized(tmp_path, kind: str, per_channel: bool,
               activations: str = "QInt8") -> onnx.ModelProto:
    """`kind` quantized by onnxruntime into the QOperator form, calibrated on 4 random inputs."""
    from onnxruntime.quantization import (
        CalibrationDataReader,
        QuantFormat,
        QuantType,
        quantize_static,
    )

    class Reader(CalibrationDataReader):
        def __init__(self):
            rng = np.random.default_rng(2)
            self.feeds = iter([{"x": rng.standard_normal((1, 3, 8, 8)).astype(np.float32)}
                               for _ in range(4)])

        def get_next(self):
            return next(self.feeds, None)

    src, dst = tmp_path / f"{kind}.onnx", tmp_path / f"{kind}-q{int(per_channel)}.onnx"
    save(_float_cnn(kind), src)
    quantize_static(str(src), str(dst), Reader(), quant_format=QuantFormat.QOperator,
                    per_channel=per_channel, activation_type=getattr(QuantType, activations))
    return onnx.load(str(dst))


def _inputs(n: int = 4) -> list[np.ndarray]:
    rng = np.random.default_rng(3)
    return [rng.standard_normal((1, 3, 8, 8)).astype(np.float32) * 1.5 for _ in range(n)]


def _out_scale(model: onnx.ModelProto) -> float:
    """The scale of the DequantizeLinear that makes the graph output."""
    dq = next(n for n in model.graph.node if n.output[0] == model.graph.output[0].name)
    assert dq.op_type == "DequantizeLinear"
    init = next(t for t in model.graph.initializer if t.name == dq.input[1])
    return float(numpy_helper.to_array(init))


def _qoperator_nodes(model: onnx.ModelProto) -> dict[str, int]:
    counts: dict[str, int] = {}
    for n in model.graph.node:
        if (n.domain, n.op_type) in QOPS:
            counts[n.op_type] = counts.get(n.op_type, 0) + 1
    return counts


def rewrite_checked(model: onnx.ModelProto):
    """The pass's contract: every QOperator node rewritten, the checker, no com.microsoft
    opset left, a second run changing nothing."""
    out, report = qoperator(model)
    assert report.rewrites == _qoperator_nodes(model), report.summary()
    assert not report.declined
    onnx.checker.check_model(out, full_check=True)
    assert not _qoperator_nodes(out)
    assert [o.domain for o in out.opset_import] == [""]
    again, second = qoperator(out)
    assert not second.changed and not second.declined
    assert again.SerializeToString() == out.SerializeToString()
    return out, report


@pytest.mark.parametrize("kind, per_channel, activations", [
    ("residual", False, "QInt8"), ("residual", True, "QInt8"), ("residual", True, "QUInt8"),
    ("mul", True, "QUInt8")])
def test_quantize_static_models_match_onnxruntime(tmp_path, kind, per_channel, activations):
    model = _quantized(tmp_path, kind, per_channel, activations)
    expected = {"residual": {"QLinearConv", "QLinearAdd", "QLinearSigmoid", "QLinearConcat",
                             "QLinearAveragePool", "QLinearLeakyRelu", "QLinearMatMul",
                             "QLinearGlobalAveragePool", "QGemm"},
                "mul": {"QLinearConv", "QLinearMul", "QLinearGlobalAveragePool",
                        "QLinearMatMul"}}[kind]
    assert set(_qoperator_nodes(model)) == expected  # what onnxruntime's tool wrote
    out, _ = rewrite_checked(model)
    step = _out_scale(model)
    for x in _inputs():
        want, got = ort_run(model, {"x": x})[0], ort_run(out, {"x": x})[0]
        assert got.shape == want.shape
        assert np.abs(got - want).max() <= STEPS_ORT * step * (1 + 1e-6), \
            (np.abs(got - want).max() / step)
        assert np.abs(want).max() > 10 * step  # the output spans more than a few steps


def test_quantize_dynamic_model_is_exact(tmp_path):
    """onnxruntime's dynamic quantization: DynamicQuantizeLinear (a runtime zero point) into
    ConvInteger and MatMulInteger, then Cast and Mul by the scales in float. The integer sums
    are exact, so the outputs are equal."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    src, dst = save(_float_cnn("residual"), tmp_path / "f.onnx"), tmp_path / "dyn.onnx"
    quantize_dynamic(str(src), str(dst), weight_type=QuantType.QUInt8,
                     op_types_to_quantize=["Conv", "MatMul"])
    model = onnx.load(str(dst))
    out, report = rewrite_checked(model)
    assert report.rewrites == {"ConvInteger": 2, "MatMulInteger": 2}  # Gemm became one too
    for x in _inputs(2):
        assert np.array_equal(ort_run(out, {"x": x})[0], ort_run(model, {"x": x})[0])


def test_compiled_quantized_model_matches_onnxruntime(tmp_path):
    import edgec

    model = _quantized(tmp_path, "residual", per_channel=True)
    path = save(model, tmp_path / "q.onnx")
    result = edgec.compile(path, output=tmp_path / "art", target="host", latency=False)
    assert result.manifest["validation"]["ok"] is True
    line = next(n for n in result.notes if n.startswith("qoperator:"))
    assert "QGemm 1" in line and "QLinearConv 2" in line, line
    compiled, step = runtime.load(tmp_path / "art"), _out_scale(model)
    kept = []
    for x in _inputs(2):  # two calls, different inputs
        got, want = compiled(x=x)["y"], ort_run(model, {"x": x})[0]
        assert np.abs(got - want).max() <= STEPS_COMPILED * step * (1 + 1e-6), \
            (np.abs(got - want).max() / step)
        kept.append((got, got.copy()))
    assert np.array_equal(*kept[0]), "the second call changed the first call's output"
    assert not np.array_equal(kept[0][1], kept[1][1])


def test_declined_and_unknown_ops_are_named_all_at_once(tmp_path):
    """A QLinearConv whose input scale is a runtime tensor stays (its bias and requantization
    need the value); an unknown com.microsoft op stays; the QLinearAdd between them converts.
    The frontend names both left, the declined one with the pass's reason."""
    scales = {"s": np.array(0.1, np.float32), "z": np.array(0, np.uint8),
              "w": np.ones((2, 2, 1, 1), np.int8), "wz": np.array(0, np.int8)}
    nodes = [helper.make_node("QLinearConv", ["x", "xs", "z", "w", "s", "wz", "s", "z"], ["c"],
                              name="qconv"),
             helper.make_node("QLinearAdd", ["c", "s", "z", "c", "s", "z", "s", "z"], ["a"],
                              name="qadd", domain=MS),
             helper.make_node("QLinearWhere", ["a"], ["y"], name="qwhere", domain=MS)]
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("x", TensorProto.UINT8, [1, 2, 3, 3]),
                     helper.make_tensor_value_info("xs", TensorProto.FLOAT, [])],
        [helper.make_tensor_value_info("y", TensorProto.UINT8, [None] * 4)],
        [numpy_helper.from_array(v, k) for k, v in scales.items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17),
                                                    helper.make_opsetid(MS, 1)])
    model.ir_version = 8
    out, report = qoperator(model)
    assert report.rewrites == {"QLinearAdd": 1}
    assert report.declined == ["qconv: 'xs' is not a constant"]
    assert [n.op_type for n in out.graph.node] == [
        "QLinearConv", "DequantizeLinear", "DequantizeLinear", "Add", "QuantizeLinear",
        "QLinearWhere"]
    assert MS in [o.domain for o in out.opset_import]  # QLinearWhere still uses it
    with pytest.raises(EdgecError) as err:
        frontend.load(save(model, tmp_path / "mixed.onnx"))
    line = str(err.value)
    assert ("unsupported ops: QLinearConv (node qconv) [not rewritten: 'xs' is not a constant], "
            "com.microsoft.QLinearWhere (node qwhere)") == line, line

