"""pad_channels on tiny graphs: op counts and padded shapes, numerics vs onnxruntime
(ORT_DISABLE_ALL, exact up to float rounding), the checker, cases where it must not pad, and
idempotence; then a padded graph through the whole `cpu` pipeline."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import helper, numpy_helper

from edgec.compiler.codegen.onnx_level.pad_channels import pad_channels

from conftest import build_and_check, check_pass, conv_kernels, random_const, tiny_model

RNG = np.random.default_rng(0)


def _const(name: str, shape) -> onnx.TensorProto:
    return random_const(name, shape, RNG)


def _conv(x: str, y: str, w: str, b: str | None = None, **attrs) -> onnx.NodeProto:
    return helper.make_node("Conv", [x, w] + ([b] if b else []), [y], **attrs)


def _check(model: onnx.ModelProto, *, multiple: int = 4, expect: dict[str, int],
           max_waste: float = 0.25) -> tuple[onnx.ModelProto, object]:
    return check_pass(lambda m: pad_channels(m, multiple=multiple, max_waste=max_waste),
                      model, expect)


def _weight_shapes(model: onnx.ModelProto) -> list[list[int]]:
    inits = {t.name: list(t.dims) for t in model.graph.initializer}
    return [inits[n.input[1]] for n in model.graph.node if n.op_type == "Conv"]


@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("k, stride, dilation", [(1, 1, 1), (3, 1, 1), (3, 2, 1), (3, 1, 2)])
@pytest.mark.parametrize("act", ["Relu", "Sigmoid", "Clip"])
def test_branch_is_padded_end_to_end(bias, k, stride, dilation, act):
    """conv(10) -> act -> depthwise(10) -> conv(8): padded to 12 all the way, no Slice; the
    Sigmoid case checks that nonzero values in the padded channels (sigmoid(0) = 0.5) are
    absorbed by the zero input channels of the last conv."""
    pad = dilation * (k - 1) // 2
    b = "b" if bias else None
    nodes = [_conv("x", "c1", "w1", b, kernel_shape=[k, k], strides=[stride] * 2,
                   dilations=[dilation] * 2, pads=[pad] * 4)]
    inits = [_const("w1", (10, 6, k, k)), _const("w2", (10, 1, 3, 3)), _const("w3", (8, 10, 1, 1))]
    inits += [_const("b", (10,))] if bias else []
    if act == "Clip":
        inits += [numpy_helper.from_array(np.float32(v), n) for n, v in (("lo", 0), ("hi", 6))]
        nodes.append(helper.make_node("Clip", ["c1", "lo", "hi"], ["a1"]))
    else:
        nodes.append(helper.make_node(act, ["c1"], ["a1"]))
    nodes += [_conv("a1", "c2", "w2", b, group=10, kernel_shape=[3, 3], pads=[1] * 4),
              _conv("c2", "y", "w3")]
    padded, report = _check(tiny_model(nodes, [1, 6, 12, 12], inits),
                            expect={"Conv": 3, "Slice": 0})
    assert report.rewrites == {"conv 10->12": 1}
    assert _weight_shapes(padded) == [[12, 6, k, k], [12, 1, 3, 3], [8, 12, 1, 1]]
    assert [helper.get_attribute_value(a) for a in padded.graph.node[2].attribute
            if a.name == "group"] == [12]


@pytest.mark.parametrize("consumer", ["Concat", "grouped", "output"])
def test_slice_back_where_channels_matter(consumer):
    """Concat, a grouped conv and a graph output need the real 10 channels: one Slice."""
    nodes = [_conv("x", "c", "w", "b", kernel_shape=[1, 1])]
    inits = [_const("w", (10, 6, 1, 1)), _const("b", (10,))]
    if consumer == "Concat":
        nodes.append(helper.make_node("Concat", ["c", "x"], ["y"], axis=1))
    elif consumer == "grouped":
        inits.append(_const("g", (10, 5, 3, 3)))
        nodes.append(_conv("c", "y", "g", group=2, kernel_shape=[3, 3], pads=[1] * 4))
    else:
        nodes[0].output[0] = "y"
    padded, report = _check(tiny_model(nodes, [1, 6, 9, 9], inits), expect={"Slice": 1})
    assert report.rewrites == {"conv 10->12": 1}
    assert padded.graph.output[0].name == "y"


def test_shared_weights_are_copied_not_changed():
    """Two convs read one weight tensor: each gets its own padded copy, each a Slice before
    the Add."""
    nodes = [_conv("x", "c", "w", kernel_shape=[1, 1]), helper.make_node("Relu", ["c"], ["r"]),
             _conv("x", "d", "w", kernel_shape=[1, 1]),
             helper.make_node("Add", ["r", "d"], ["y"])]
    model = tiny_model(nodes, [1, 6, 5, 5], [_const("w", (10, 6, 1, 1))])
    padded, report = _check(model, expect={"Slice": 2})
    assert report.rewrites == {"conv 10->12": 2}
    assert _weight_shapes(padded) == [[12, 6, 1, 1], [12, 6, 1, 1]]
    assert len({n.input[1] for n in padded.graph.node if n.op_type == "Conv"}) == 2


@pytest.mark.parametrize("case", ["divisible", "too_wasteful", "dynamic_weights", "grouped"])
def test_does_not_pad(case):
    w_shape = {"divisible": (8, 6, 3, 3), "too_wasteful": (5, 6, 3, 3),
               "dynamic_weights": (10, 6, 3, 3), "grouped": (10, 3, 3, 3)}[case]
    nodes = [_conv("x", "y", "w", kernel_shape=[3, 3], pads=[1] * 4,
                   group=2 if case == "grouped" else 1)]
    inits = [] if case == "dynamic_weights" else [_const("w", w_shape)]
    if case == "dynamic_weights":
        nodes.insert(0, helper.make_node("Identity", ["wsrc"], ["w"]))
        inits = [_const("wsrc", w_shape)]
    model = tiny_model(nodes, [1, 6, 7, 7], inits)
    padded, report = pad_channels(model, multiple=4)
    assert not report.changed, report.summary()
    assert padded.graph.SerializeToString() == model.graph.SerializeToString()
    if case == "too_wasteful":
        assert "5 channels would need 3 more" in report.declined[0]


def test_padded_graph_through_cpu_pipeline():
    """58 channels (ShuffleNetV2's branch width) in the host pipeline: padded to the vector
    length, every conv taken by a rule, outputs equal to onnxruntime on the original graph."""
    nodes = [_conv("x", "c1", "w1", "b1", kernel_shape=[1, 1]),
             helper.make_node("Relu", ["c1"], ["r1"]),
             _conv("r1", "c2", "w2", "b2", group=58, kernel_shape=[3, 3], pads=[1] * 4),
             _conv("c2", "c3", "w3", "b3", kernel_shape=[1, 1]),
             helper.make_node("Relu", ["c3"], ["r3"]),
             helper.make_node("Concat", ["x", "r3"], ["y"], axis=1)]
    inits = [_const("w1", (58, 58, 1, 1)), _const("b1", (58,)), _const("w2", (58, 1, 3, 3)),
             _const("b2", (58,)), _const("w3", (58, 58, 1, 1)), _const("b3", (58,))]
    lowering = build_and_check(tiny_model(nodes, [1, 58, 14, 14], inits))
    assert lowering.graph and "conv 58->" in lowering.graph[0], lowering.graph
    convs = conv_kernels(lowering)
    # The 1x1 conv and the depthwise conv reading it are merged into one kernel.
    assert sum(name.count("conv2d") for name in convs) == 3, lowering.kernels
    assert set(convs.values()) == {"reduction_tile", "conv_depthwise"}, lowering.kernels
