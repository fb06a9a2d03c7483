"""The compile check's tolerance scales with the computation (compiler/tolerance.py): a correct
build of a model whose output is small next to its activations is accepted, a wrong one is
still refused."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
from onnx import helper, numpy_helper

import edgec
from edgec.compiler import codegen
from edgec.compiler.tolerance import (
    NOISE_CAP,
    QUANTIZED_CAP,
    RTOL,
    noise_cap,
    perturbed,
    tolerance,
)
from edgec.errors import EdgecError

from conftest import save, tiny_model


def _small_sigmoid_map(path):
    """Sigmoid(conv(x, W) - conv(x, 1.001 W) - 12): logits near -12 left by two convs of
    magnitude ~1.5e3 cancelling, so the map is ~1e-5..1e-3 and float32 rounding of the convs
    moves it by ~5e-4 of itself (a text detector's probability map on random inputs)."""
    rng = np.random.default_rng(0)
    w = (rng.standard_normal((8, 3, 3, 3)) * 300).astype(np.float32)
    model = tiny_model([
        helper.make_node("Conv", ["x", "w"], ["a"], kernel_shape=[3, 3], pads=[1] * 4),
        helper.make_node("Conv", ["x", "w2", "b"], ["c"], kernel_shape=[3, 3], pads=[1] * 4),
        helper.make_node("Sub", ["a", "c"], ["l"]),
        helper.make_node("Sigmoid", ["l"], ["y"])], [1, 3, 16, 16],
        {"w": w, "w2": (w * np.float32(1.001)).astype(np.float32),
         "b": np.full(8, 12.0, np.float32)})
    return save(model, path)


def test_small_output_of_large_activations_compiles(tmp_path):
    result = edgec.compile(_small_sigmoid_map(tmp_path / "m.onnx"), output=tmp_path / "out")
    (row,) = result.manifest["validation"]["outputs"]
    assert row["ok"] and row["max_abs_ref"] < 1e-2
    # what max|ref| alone would have allowed: this correct build is over it
    assert row["max_abs_diff"] > RTOL * row["max_abs_ref"], row
    assert row["noise"] > 0 and row["max_abs_diff"] <= row["tol"]
    saved = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert saved["validation"]["outputs"][0]["tol"] == row["tol"]


def test_wrong_kernel_still_refused(tmp_path, monkeypatch):
    """One weight off by 1e-4 of itself in the built model: the map moves by ~15%."""
    real = codegen.build

    def off(model, *args, **kwargs):
        for t in model.graph.initializer:
            if t.name == "w":
                arr = numpy_helper.to_array(t) * np.float32(1.0001)
                t.CopyFrom(numpy_helper.from_array(arr.astype(np.float32), "w"))
        return real(model, *args, **kwargs)

    monkeypatch.setattr(codegen, "build", off)
    with pytest.raises(EdgecError, match="disagrees with onnxruntime on output 'y'.*tolerance"):
        edgec.compile(_small_sigmoid_map(tmp_path / "m.onnx"), output=tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_tolerance_is_rtol_unless_noise_says_more_and_capped():
    assert tolerance(2.0, 0.0) == pytest.approx(2.0 * RTOL)
    assert tolerance(1e-3, 1e-7) == pytest.approx(1e-6)  # 10 x noise
    assert tolerance(1e-3, 1.0) == pytest.approx(1e-5)  # at most 1% of max|ref|


def test_a_quantized_model_gets_the_wider_cap():
    """A model with QuantizeLinear nodes may move by whole int8 steps (up to 10% of max|ref|
    when its measured noise says so); a float model keeps the 1% cap."""
    fp32 = tiny_model([helper.make_node("Relu", ["x"], ["y"])], [1, 4])
    qdq = tiny_model([helper.make_node("QuantizeLinear", ["x", "s", "z"], ["q"]),
                      helper.make_node("DequantizeLinear", ["q", "s", "z"], ["y"])], [1, 4],
                     {"s": np.float32(0.1), "z": np.uint8(128)})
    assert noise_cap(fp32.SerializeToString()) == NOISE_CAP
    assert noise_cap(qdq.SerializeToString()) == QUANTIZED_CAP
    assert tolerance(10.0, 1.0, cap=QUANTIZED_CAP) == pytest.approx(1.0)  # 10% of max|ref|
    assert tolerance(10.0, 0.05, cap=QUANTIZED_CAP) == pytest.approx(0.5)  # 10 x noise


def test_perturbation_is_one_rounding_step_of_floats_only():
    model = tiny_model([helper.make_node("Reshape", ["x", "s"], ["r"]),
                        helper.make_node("Mul", ["r", "k"], ["y"])], [2, 3],
                       {"s": np.array([3, 2], np.int64),
                        "k": np.linspace(0.5, 3.0, 6, dtype=np.float32).reshape(3, 2)})
    moved = {t.name: numpy_helper.to_array(t) for t in perturbed(model).graph.initializer}
    orig = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    assert np.array_equal(moved["s"], orig["s"])
    steps = np.abs(moved["k"] - orig["k"]) / np.spacing(orig["k"])
    assert np.all((steps > 0) & (steps <= 2)), steps
    onnx.checker.check_model(perturbed(model))


def test_perturbation_keeps_resize_scales():
    """A Resize's scales size its output: moved a step down, 2.0 x 5 rows would be 9."""
    model = tiny_model([helper.make_node("Resize", ["x", "", "scales"], ["r"], mode="nearest"),
                        helper.make_node("Mul", ["r", "k"], ["y"])], [1, 1, 5, 5],
                       {"scales": np.array([1, 1, 2, 2], np.float32),
                        "k": np.array([1.5], np.float32)})
    moved = {t.name: numpy_helper.to_array(t) for t in perturbed(model).graph.initializer}
    assert np.array_equal(moved["scales"], [1, 1, 2, 2])
    assert moved["k"][0] != np.float32(1.5)
