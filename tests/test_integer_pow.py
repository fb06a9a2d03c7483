"""integer_pow on tiny graphs: Pow by 2, 3 and 4 become multiplies, within 1e-5 of onnxruntime
on the original (check_pass: checker, op counts, idempotence), negative inputs included; the
exponents it must leave to powf, each with its reason; and GeM pooling through the whole `cpu`
pipeline, right over several calls, the cube rewritten and the pooled 1/3 power left to powf."""

from __future__ import annotations

import numpy as np
import pytest
from onnx import helper, numpy_helper

from edgec.compiler.codegen.onnx_level.integer_pow import integer_pow

from conftest import build_and_check, check_pass, random_const, tiny_model


def _pow(exponent) -> object:
    c = numpy_helper.from_array(np.asarray(exponent, np.float32), "c")
    return tiny_model([helper.make_node("Pow", ["x", "c"], ["y"])], [1, 3, 4, 5], [c])


@pytest.mark.parametrize("n, muls", [(2, 1), (3, 2), (4, 2), ([3.0, 3.0, 3.0], 2)])
def test_small_integer_powers_become_multiplies(n, muls):
    exponent = np.asarray(n, np.float32).reshape(-1, 1, 1) if isinstance(n, list) else n
    _, report = check_pass(integer_pow, _pow(exponent), {"Pow": 0, "Mul": muls})
    assert report.rewrites == {f"x^{int(np.ravel(exponent)[0])}": 1}


@pytest.mark.parametrize("exponent, why", [
    (0.5, "exponent 0.5 is not one of 2, 3, 4"),
    (5.0, "exponent 5 is not one of 2, 3, 4"),
    (np.array([2.0, 3.0, 2.0], np.float32).reshape(3, 1, 1), "exponent holds several values"),
])
def test_other_exponents_are_left_to_powf(exponent, why):
    out, report = integer_pow(_pow(exponent))
    assert not report.changed and [n.op_type for n in out.graph.node] == ["Pow"]
    assert report.declined == [f"y: {why}"]


def test_a_computed_exponent_is_declined():
    model = tiny_model([helper.make_node("Pow", ["x", "x"], ["y"])], [1, 3, 4, 5])
    _, report = integer_pow(model)
    assert report.declined == ["y: exponent is not a constant"]


def test_gem_pooling_through_the_cpu_pipeline():
    rng = np.random.default_rng(0)
    inits = [random_const("w", (16, 8, 3, 3), rng),
             numpy_helper.from_array(np.float32(1e-6), "eps"),
             numpy_helper.from_array(np.float32(3.0), "p"),
             numpy_helper.from_array(np.float32(1 / 3), "inv_p")]
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], pads=[1] * 4),
             helper.make_node("Clip", ["c", "eps"], ["k"]),
             helper.make_node("Pow", ["k", "p"], ["cube"]),
             helper.make_node("GlobalAveragePool", ["cube"], ["m"]),
             helper.make_node("Pow", ["m", "inv_p"], ["y"])]
    lowering = build_and_check(tiny_model(nodes, [1, 8, 12, 12], inits))
    assert any(g.startswith("integer_pow: x^3 1; declined 1") for g in lowering.graph)
