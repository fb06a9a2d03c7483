"""passes/separable.py: KxK conv -> depthwise KxK + 1x1, exact at full rank, numerics against
onnxruntime, the cases it must decline, idempotence, and never run unless named."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import helper

from edgec import models
from edgec.compiler import analysis, passes
from edgec.compiler.passes import SeparableOptions, separable

from conftest import ort_run, random_const, tiny_model


def _conv_model(n=24, c=8, k=3, group=1, stride=2, pads=(1, 1, 1, 1), bias=True, seed=0):
    rng = np.random.default_rng(seed)
    inits = [random_const("w", [n, c // group, k, k], rng)]
    inputs = ["x", "w"]
    if bias:
        inits.append(random_const("b", [n], rng))
        inputs.append("b")
    conv = helper.make_node("Conv", inputs, ["y"], name="conv", group=group,
                            strides=[stride, stride], pads=list(pads), kernel_shape=[k, k])
    return tiny_model([conv], [1, c, 15, 15], inits)


def _feed(model, seed=1):
    shape = [d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim]
    return {"x": np.random.default_rng(seed).standard_normal(shape).astype(np.float32)}


def _rel_err(a, b):
    return float(np.max(np.abs(a - b)) / np.max(np.abs(b)))


def test_full_rank_is_exact_and_makes_a_depthwise_and_a_1x1():
    model = _conv_model()
    out, report = separable(model, SeparableOptions(only_cheaper=False))
    assert report.rewrites == {"conv->depthwise+1x1": 1}
    convs = [n for n in out.graph.node if n.op_type == "Conv"]
    groups = [next((a.i for a in n.attribute if a.name == "group"), 1) for n in convs]
    assert groups == [8, 1]  # depthwise over the 8 input channels, then the 1x1
    onnx.checker.check_model(out, full_check=True)
    feed = _feed(model)
    assert _rel_err(ort_run(out, feed)[0], ort_run(model, feed)[0]) < 1e-5


def test_lower_rank_saves_macs_and_error_falls_with_rank():
    model = _conv_model(n=48, c=16)
    feed = _feed(model)
    want = ort_run(model, feed)[0]
    errors, macs = [], []
    for rank in (1, 3, 9):
        out, report = separable(model, SeparableOptions(rank=rank, only_cheaper=False))
        assert report.changed
        errors.append(_rel_err(ort_run(out, feed)[0], want))
        macs.append(analysis.analyze(out).macs)
    dense = analysis.analyze(model).macs
    assert errors[0] > errors[1] > errors[2] and errors[2] < 1e-5
    assert macs[0] / dense == pytest.approx(1 / 48 + 1 / 9, rel=0.02)  # T/N + T/K^2


def test_energy_picks_the_rank_and_only_cheaper_declines_full_rank():
    model = _conv_model(n=48, c=16)
    _, report = separable(model, SeparableOptions(energy=1.0))
    assert not report.changed and "saves no MACs" in report.declined[0]
    out, report = separable(model, SeparableOptions(energy=0.5))
    assert report.changed and "rank" in next(iter(report.rewrites))


@pytest.mark.parametrize("case,why", [
    ("depthwise", "already grouped or depthwise"),
    ("grouped", "already grouped or depthwise"),
    ("pointwise", "1x1 kernel"),
    ("weight_input", "weights are not a constant"),
])
def test_declines_what_it_must_not_rewrite(case, why):
    if case == "depthwise":
        model = _conv_model(n=8, c=8, group=8)
    elif case == "grouped":
        model = _conv_model(n=8, c=8, group=2)
    elif case == "pointwise":
        model = _conv_model(k=1, pads=(0, 0, 0, 0))
    else:
        conv = helper.make_node("Conv", ["x", "x"], ["y"], name="conv")
        model = tiny_model([conv], [3, 3, 3, 3], infer=False)
    out, report = separable(model, SeparableOptions(only_cheaper=False))
    assert not report.changed and why in report.declined[0]
    assert out.graph.node[0].op_type == "Conv" and len(out.graph.node) == 1


def test_idempotent():
    once, _ = separable(_conv_model(), SeparableOptions(only_cheaper=False))
    twice, report = separable(once, SeparableOptions(only_cheaper=False))
    assert not report.changed
    assert [n.op_type for n in twice.graph.node] == [n.op_type for n in once.graph.node]


def test_trained_digits_model_at_full_rank_equals_the_original(tmp_path):
    """digits_vgg after BN folding: every 3x3 conv split, outputs within 1e-5 of the original."""
    from edgec.models import digits

    model = models.build("digits_vgg")
    folded, _ = passes.run_passes(model, passes.select())
    out, report = separable(folded, SeparableOptions(only_cheaper=False))
    assert report.rewrites == {"conv->depthwise+1x1": 6}
    images, _ = digits.test_split()
    for image in digits.model_inputs(images[:8]):
        feed = {"input": image[None]}
        assert _rel_err(ort_run(out, feed)[0], ort_run(model, feed)[0]) < 1e-5


def test_lossy_passes_run_only_when_named():
    assert "separable" not in passes.select() and not passes.PASSES["separable"].exact
    assert passes.select(only=["separable"]) == ["separable"]
    model, reports = passes.run_passes(_conv_model(n=48, c=16), ["separable"],
                                       {"separable": SeparableOptions(rank=2)})
    assert reports[0].changed
    with pytest.raises(Exception, match="takes SeparableOptions"):
        passes.PASSES["separable"](model, object())
