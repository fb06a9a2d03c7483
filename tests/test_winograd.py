"""winograd: 3x3 stride-1 convs as F(2x2, 3x3) transforms around 16 GEMMs; tiny graphs from
onnx.helper, imported channels-last as the `cpu` pipeline does; built models against
onnxruntime (1e-4 rel), on the host and, for the arm target, under qemu."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from onnx import helper

from edgec import targets
from edgec.compiler import codegen
from edgec.compiler.codegen.relax_level.fold_numpy import fold_numpy
from edgec.compiler.codegen.relax_level.layout import channels_last
from edgec.compiler.codegen.relax_level.winograd import WinogradOptions, transform_weights, winograd

from conftest import build_and_check, random_const, save, tiny_model

RNG = np.random.default_rng(11)


def _conv(c: int = 16, k: int = 32, hw: tuple[int, int] = (8, 8), pads=(1, 1, 1, 1),
          bias: bool = True, residual: bool = False, relu: bool = True, **attrs):
    shape = (k, c // attrs.get("group", 1), *attrs.pop("kernel", (3, 3)))
    inits = [random_const("w", shape, RNG)] + ([random_const("b", (k,), RNG)] if bias else [])
    nodes = [helper.make_node("Conv", ["x", "w", *(["b"] if bias else [])], ["c"],
                              pads=list(pads), **attrs)]
    out = "c"
    if residual:
        nodes.append(helper.make_node("Add", [out, "x"], ["s"]))
        out = "s"
    if relu:
        nodes.append(helper.make_node("Relu", [out], ["r"]))
        out = "r"
    nodes.append(helper.make_node("Identity", [out], ["y"]))
    return tiny_model(nodes, [1, c, *hw], inits)


def _layout(model):
    target = targets.get("host")
    x_shape = [d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim]
    with target.tvm_target():
        return fold_numpy(channels_last(codegen.import_model(model, target, {"x": x_shape})))[0]


def _ops(mod) -> list[str]:
    import tvm
    from tvm import relax

    return [b.value.op.name if isinstance(b.value.op, tvm.ir.Op) else "call_tir"
            for block in mod["main"].body.blocks for b in block.bindings
            if isinstance(b.value, relax.Call)]


def test_weight_transform_is_lavins():
    """U = G g G^T, and the 1-D identity behind F(2, 3): A^T [(G g) * (B^T d)] = the valid
    correlation of d (4 taps) with g (3 taps)."""
    g, d = RNG.standard_normal(3), RNG.standard_normal(4)
    b_t = np.array([[1, 0, -1, 0], [0, 1, 1, 0], [0, -1, 1, 0], [0, 1, 0, -1]])
    a_t = np.array([[1, 1, 1, 0], [0, 1, -1, -1]])
    g_m = np.array([[1, 0, 0], [0.5, 0.5, 0.5], [0.5, -0.5, 0.5], [0, 0, 1]])
    np.testing.assert_allclose(a_t @ ((g_m @ g) * (b_t @ d)), np.correlate(d, g, "valid"))
    w = RNG.standard_normal((3, 3, 2, 5))
    u = transform_weights(w)
    assert u.shape == (16, 2, 5)
    np.testing.assert_allclose(u[:, 1, 3].reshape(4, 4), g_m @ w[:, :, 1, 3] @ g_m.T)


@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("residual", [True, False])
@pytest.mark.parametrize("hw, pads", [((8, 8), (1, 1, 1, 1)), ((9, 7), (1, 1, 1, 1)),
                                      ((10, 10), (0, 0, 0, 0)), ((8, 9), (0, 1, 2, 1))])
def test_rewrite_matches_onnxruntime(bias, residual, hw, pads):
    if residual and (pads[0] + pads[2] != 2 or pads[1] + pads[3] != 2):
        pytest.skip("the residual add needs the conv to keep the map's size")
    c, k = (16, 16) if residual else (16, 32)
    model = _conv(c, k, hw, pads, bias, residual)
    mod, report = winograd(_layout(model))
    assert _ops(mod).count("relax.nn.conv2d") == 0 and _ops(mod).count("relax.matmul") == 1
    assert sum(report.rewrites.values()) == 1 and report.changed
    again, second = winograd(mod)
    assert not second.changed and _ops(again) == _ops(mod)
    lowering = build_and_check(model)
    assert {"reduction_tile", "winograd"} <= set(lowering.kernels.values())
    assert not [k for k in lowering.kernels if "conv2d" in k]
    assert any(line.startswith("winograd") for line in lowering.graph)


@pytest.mark.parametrize("c", [17, 18])
def test_channels_the_vector_does_not_divide(c):
    """17 channels are not padded to 24 (pad_channels' waste limit): the input transform
    keeps its own schedule, vectorized by what divides or not at all."""
    lowering = build_and_check(_conv(c, c, (16, 15), bias=False, relu=False))
    assert [v for k, v in lowering.kernels.items() if "winograd_input" in k] == ["winograd"]


@pytest.mark.parametrize("case, attrs, why", [
    ("stride 2", {"strides": [2, 2]}, "stride or dilation"),
    ("dilation 2", {"dilations": [2, 2], "pads": (2, 2, 2, 2)}, "stride or dilation"),
    ("groups", {"group": 4}, "grouped"),
    ("few channels", {"c": 8}, "fewer than 16 channels"),
    ("few tiles", {"hw": (6, 6)}, "9 tiles, under 16"),
])
def test_declines_with_a_reason(case, attrs, why):
    model = _conv(**attrs)
    mod, report = winograd(_layout(model))
    assert not report.changed and [d.split(": ", 1)[1] for d in report.declined] == [why], case
    assert _ops(mod).count("relax.nn.conv2d") == 1


def test_other_kernels_say_nothing():
    model = _conv(kernel=(1, 1), pads=(0, 0, 0, 0))
    mod, report = winograd(_layout(model))
    assert not report.changed and not report.declined
    assert _ops(mod).count("relax.nn.conv2d") == 1


def test_options_move_the_thresholds():
    model = _conv(hw=(6, 6))
    _, report = winograd(_layout(model), options=WinogradOptions(min_tiles=9))
    assert report.rewrites == {"conv 6x6x16->32": 1}


@pytest.mark.skipif(shutil.which("qemu-aarch64") is None, reason="qemu-user is not installed")
def test_arm_build_runs_under_qemu(tmp_path):
    """NEON's 4-lane vectors: the transforms' schedules and the GEMM, checked by compile's
    own validation under qemu against onnxruntime."""
    import edgec

    src = save(_conv(16, 16, (12, 12), residual=True), tmp_path / "w.onnx")
    out = tmp_path / "art"
    edgec.compile(src, output=out, target="arm", bundle=True)
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["validation"]["ok"] and manifest["validation"]["device"].startswith("qemu")
    assert "winograd" in manifest["codegen"]["kernels"].values()
    assert manifest["codegen"]["graph"][-1].startswith("winograd")
