"""fold_batchnorm on tiny graphs: op counts, numerics vs onnxruntime (ORT_DISABLE_ALL) within
1e-5 relative, the checker, cases that must not fold, and idempotence."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from edgec import models
from edgec.compiler.passes import fold_batchnorm, run_passes

from conftest import check_pass, dead_values, ort_run, random_const, tiny_model

RNG = np.random.default_rng(0)


def _bn(c: int, x: str, y: str, prefix: str = "bn") -> tuple[onnx.NodeProto, list]:
    params = [RNG.uniform(0.5, 1.5, c), RNG.normal(0, 0.3, c), RNG.normal(0, 0.3, c),
              RNG.uniform(0.3, 2.0, c)]
    names = [f"{prefix}_{k}" for k in ("g", "b", "m", "v")]
    inits = [numpy_helper.from_array(p.astype(np.float32), n) for p, n in zip(params, names)]
    return helper.make_node("BatchNormalization", [x, *names], [y], name=prefix,
                            epsilon=1e-3), inits


def _const(name: str, shape) -> onnx.TensorProto:
    return random_const(name, shape, RNG)


def _weights(w_shape, bias: int | None) -> list[onnx.TensorProto]:
    """Random weights "w" and, when `bias` is a length, a bias "b"."""
    return [_const("w", w_shape)] + ([_const("b", (bias,))] if bias else [])


def _check(model: onnx.ModelProto, expect_ops: dict[str, int]):
    """check_pass, and no weight left that nothing reads (the replaced weights, the BN's)."""
    folded, report = check_pass(fold_batchnorm, model, expect_ops)
    assert not dead_values(folded)
    return folded, report


def _folds(report) -> dict[str, int]:
    """The report's rewrites without its dead-value counts."""
    return {k: n for k, n in report.rewrites.items() if not k.startswith("dead ")}


@pytest.mark.parametrize("nd", [1, 2, 3])
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("groups, stride, dilation", [(1, 1, 1), (2, 2, 1), (4, 1, 2)])
def test_conv_then_bn(nd, bias, groups, stride, dilation):
    cin, cout, k = 4, 8, 3
    inputs = ["x", "w"] + (["b"] if bias else [])
    conv = helper.make_node("Conv", inputs, ["c"], group=groups, strides=[stride] * nd,
                            dilations=[dilation] * nd, pads=[1] * 2 * nd)
    bn, bn_inits = _bn(cout, "c", "y")
    inits = _weights((cout, cin // groups, *[k] * nd), bias and cout) + bn_inits
    folded, report = _check(tiny_model([conv, bn], (1, cin, *[9] * nd), inits),
                            {"Conv": 1, "BatchNormalization": 0})
    assert _folds(report) == {"conv+bn": 1}
    # the old w (and b) and the 4 BN parameters: replaced by the folded w and b
    assert report.rewrites["dead initializers removed"] == len(inits)
    assert len(folded.graph.initializer) == 2


@pytest.mark.parametrize("groups", [1, 2])
@pytest.mark.parametrize("bias", [True, False])
def test_conv_transpose_then_bn(groups, bias):
    cin, cout = 4, 6
    inputs = ["x", "w"] + (["b"] if bias else [])
    node = helper.make_node("ConvTranspose", inputs, ["c"], group=groups, strides=[2, 2],
                            pads=[1, 1, 1, 1], kernel_shape=[4, 4])
    bn, bn_inits = _bn(cout, "c", "y")
    inits = _weights((cin, cout // groups, 4, 4), bias and cout) + bn_inits
    _, report = _check(tiny_model([node, bn], (1, cin, 5, 5), inits),
                       {"ConvTranspose": 1, "BatchNormalization": 0})
    assert _folds(report) == {"convtranspose+bn": 1}


@pytest.mark.parametrize("trans_b", [0, 1])
@pytest.mark.parametrize("bias", [True, False])
def test_gemm_then_bn(trans_b, bias):
    k, n = 6, 5
    inputs = ["x", "w"] + (["b"] if bias else [])
    gemm = helper.make_node("Gemm", inputs, ["g"], transB=trans_b, alpha=0.7, beta=1.3)
    bn, bn_inits = _bn(n, "g", "y")
    inits = _weights((n, k) if trans_b else (k, n), bias and n) + bn_inits
    _check(tiny_model([gemm, bn], (3, k), inits), {"Gemm": 1, "BatchNormalization": 0})


def test_matmul_then_bn_becomes_gemm():
    mm = helper.make_node("MatMul", ["x", "w"], ["m"])
    bn, bn_inits = _bn(5, "m", "y")
    _check(tiny_model([mm, bn], (3, 6), [_const("w", (6, 5)), *bn_inits]),
           {"Gemm": 1, "MatMul": 0, "BatchNormalization": 0})


@pytest.mark.parametrize("groups", [1, 2])
def test_bn_then_unpadded_conv(groups):
    bn, bn_inits = _bn(4, "x", "n")
    conv = helper.make_node("Conv", ["n", "w", "b"], ["y"], group=groups, strides=[2, 2])
    inits = [_const("w", (6, 4 // groups, 3, 3)), _const("b", (6,)), *bn_inits]
    relu_free = tiny_model([bn, conv], (1, 4, 9, 9), inits)
    _, report = _check(relu_free, {"Conv": 1, "BatchNormalization": 0})
    assert _folds(report) == {"bn+conv": 1}


def test_bn_then_padded_conv_is_not_folded_into_it():
    bn, bn_inits = _bn(4, "x", "n")
    conv = helper.make_node("Conv", ["n", "w"], ["y"], pads=[1, 1, 1, 1])
    _, report = _check(tiny_model([bn, conv], (1, 4, 7, 7), [_const("w", (6, 4, 3, 3)), *bn_inits]),
                       {"Conv": 1, "BatchNormalization": 0, "Mul": 1, "Add": 1})
    assert _folds(report) == {"bn->scale_shift": 1}
    assert "pads with zeros" in report.declined[0]


def test_conv_output_with_other_consumers_declines_folding():
    conv = helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1])
    bn, bn_inits = _bn(4, "c", "n")
    add = helper.make_node("Add", ["n", "c"], ["y"])
    _, report = _check(tiny_model([conv, bn, add], (1, 3, 6, 6),
                                  [_const("w", (4, 3, 3, 3)), *bn_inits]),
                       {"Conv": 1, "BatchNormalization": 0, "Mul": 1})
    assert "Conv output has other consumers" in report.declined[0]


def test_non_constant_weights_leave_bn_as_is():
    conv = helper.make_node("Conv", ["x", "x"], ["c"])  # weights are the (dynamic) input
    bn, bn_inits = _bn(2, "c", "y")
    model = tiny_model([conv, bn], (2, 2, 1, 1), bn_inits)
    bn_inits_dyn = model.graph.node[1]
    bn_inits_dyn.input[1] = "x_scale"
    model.graph.input.append(helper.make_tensor_value_info("x_scale", TensorProto.FLOAT, [2]))
    folded, report = fold_batchnorm(model)
    assert [n.op_type for n in folded.graph.node] == ["Conv", "BatchNormalization"]
    assert not report.changed and "not constants" in report.declined[0]


def test_every_reference_bn_folds_exactly():
    for name in models.MODELS:
        if name == "alexnet":  # no BatchNorm, 250 MB of weights
            continue
        model = models.build(name)
        folded, reports = run_passes(model, ["cleanup", "fold_batchnorm"])
        assert not [n for n in folded.graph.node if n.op_type == "BatchNormalization"], name
        assert not dead_values(folded), name
        weights = lambda m: sum(t.ByteSize() for t in m.graph.initializer)  # noqa: E731
        assert weights(folded) <= weights(model), name
        assert not any("scale_shift" in k for r in reports for k in r.rewrites), name
        shape = [d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim]
        x = np.random.default_rng(11).standard_normal(shape).astype(np.float32)
        want, got = ort_run(model, {"input": x})[0], ort_run(folded, {"input": x})[0]
        assert np.abs(got - want).max() <= 1e-5 * np.abs(want).max(), name
