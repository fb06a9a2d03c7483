"""cleanup on tiny graphs: op counts, numerics vs onnxruntime (ORT_DISABLE_ALL), the checker,
cases that must not fire, and idempotence."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from edgec.compiler.passes import cleanup

from conftest import dead_values, ort_run, save, tiny_model

RNG = np.random.default_rng(1)


def _run(model: onnx.ModelProto) -> tuple[list[str], object]:
    out, report = cleanup(model)
    onnx.checker.check_model(out, full_check=True)
    x_shape = [d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim]
    x = RNG.standard_normal(x_shape).astype(np.float32)
    want, got = ort_run(model, {"x": x})[0], ort_run(out, {"x": x})[0]
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6 * np.abs(want).max())
    again, second = cleanup(out)
    assert not second.changed and again.graph.SerializeToString() == out.graph.SerializeToString()
    assert not dead_values(out)
    return [n.op_type for n in out.graph.node], report


def test_dropout_and_identity_removed():
    nodes = [helper.make_node("Relu", ["x"], ["a"]),
             helper.make_node("Dropout", ["a", "ratio"], ["b"]),
             helper.make_node("Identity", ["b"], ["c"]),
             helper.make_node("Sigmoid", ["c"], ["y"])]
    ops, report = _run(tiny_model(nodes, (2, 3), {"ratio": np.float32(0.5)}))
    assert ops == ["Relu", "Sigmoid"]
    # Dropout's ratio is read by nothing once the Dropout is gone
    assert report.rewrites == {"dropout removed": 1, "identity removed": 1,
                               "dead initializers removed": 1}


def test_identity_feeding_graph_output_keeps_the_output_name():
    nodes = [helper.make_node("Relu", ["x"], ["a"]), helper.make_node("Identity", ["a"], ["y"])]
    ops, _ = _run(tiny_model(nodes, (4,)))
    assert ops == ["Relu"]


def test_identity_between_graph_input_and_output_must_stay():
    ops, report = _run(tiny_model([helper.make_node("Identity", ["x"], ["y"])], (4,)))
    assert ops == ["Identity"] and "graph input to a graph output" in report.declined[0]


def test_dropout_with_used_mask_stays():
    nodes = [helper.make_node("Dropout", ["x"], ["a", "mask"]),
             helper.make_node("Cast", ["mask"], ["m"], to=TensorProto.FLOAT),
             helper.make_node("Add", ["a", "m"], ["y"])]
    ops, _ = _run(tiny_model(nodes, (3,)))
    assert "Dropout" in ops


@pytest.mark.parametrize("pads", [[0, 0, 1, 1, 0, 0, 1, 1], [0, 0, 2, 0, 0, 0, 1, 3]])
@pytest.mark.parametrize("own_pads", [[0, 0, 0, 0], [1, 1, 1, 1]])
@pytest.mark.parametrize("stride, dilation, group", [(1, 1, 1), (2, 2, 2)])
def test_pad_fuses_into_conv(pads, own_pads, stride, dilation, group):
    nodes = [helper.make_node("Pad", ["x", "pads"], ["p"], mode="constant"),
             helper.make_node("Conv", ["p", "w", "b"], ["y"], pads=own_pads,
                              strides=[stride] * 2, dilations=[dilation] * 2, group=group)]
    inits = {"pads": np.array(pads, np.int64),
             "w": RNG.standard_normal((4, 4 // group, 3, 3)).astype(np.float32),
             "b": RNG.standard_normal(4).astype(np.float32)}
    ops, report = _run(tiny_model(nodes, (1, 4, 8, 8), inits))
    assert ops == ["Conv"]
    assert report.rewrites == {"pad->conv": 1, "dead initializers removed": 1}  # the pads


@pytest.mark.parametrize("own_pads, include, fires", [
    ([0, 0, 0, 0], 0, True), ([1, 1, 1, 1], 1, True), ([1, 1, 1, 1], 0, False)])
def test_pad_into_average_pool(own_pads, include, fires):
    nodes = [helper.make_node("Pad", ["x", "pads"], ["p"]),
             helper.make_node("AveragePool", ["p"], ["y"], kernel_shape=[3, 3], pads=own_pads,
                              count_include_pad=include)]
    ops, _ = _run(tiny_model(nodes, (1, 2, 6, 6),
                             {"pads": np.array([0, 0, 1, 1, 0, 0, 1, 1], np.int64)}))
    assert (ops == ["AveragePool"]) == fires


@pytest.mark.parametrize("case", ["maxpool", "value", "reflect", "channel"])
def test_pad_must_not_fuse(case):
    pads = [0, 1, 1, 1, 0, 0, 1, 1] if case == "channel" else [0, 0, 1, 1, 0, 0, 1, 1]
    inits = {"pads": np.array(pads, np.int64), "v": np.float32(0.5 if case == "value" else 0),
             "w": RNG.standard_normal((2, 3 if case == "channel" else 2, 3, 3)).astype(
                 np.float32)}
    pad = helper.make_node("Pad", ["x", "pads", "v"], ["p"],
                           mode="reflect" if case == "reflect" else "constant")
    user = (helper.make_node("MaxPool", ["p"], ["y"], kernel_shape=[2, 2]) if case == "maxpool"
            else helper.make_node("Conv", ["p", "w"], ["y"]))
    if case == "maxpool":
        del inits["w"]
    ops, _ = _run(tiny_model([pad, user], (1, 2, 6, 6), inits))
    assert "Pad" in ops


def test_inverse_transposes_cancel_and_others_do_not():
    nodes = [helper.make_node("Transpose", ["x"], ["a"], perm=[0, 2, 3, 1]),
             helper.make_node("Transpose", ["a"], ["b"], perm=[0, 3, 1, 2]),
             helper.make_node("Relu", ["b"], ["c"]),
             helper.make_node("Transpose", ["c"], ["d"], perm=[0, 2, 3, 1]),
             helper.make_node("Transpose", ["d"], ["y"], perm=[0, 2, 3, 1])]
    ops, report = _run(tiny_model(nodes, (1, 2, 3, 4)))
    assert ops == ["Relu", "Transpose", "Transpose"]
    assert report.rewrites == {"transpose pair removed": 1}


def test_noop_reshape_removed_real_one_kept():
    nodes = [helper.make_node("Reshape", ["x", "same"], ["a"]),
             helper.make_node("Reshape", ["a", "flat"], ["y"])]
    inits = {"same": np.array([2, 3, 4], np.int64), "flat": np.array([2, 12], np.int64)}
    ops, report = _run(tiny_model(nodes, (2, 3, 4), inits))
    assert ops == ["Reshape"] and report.rewrites["reshape removed"] == 1


def test_constant_chain_folds_and_dead_nodes_go():
    nodes = [helper.make_node("Constant", [], ["k"], value=numpy_helper.from_array(
                 np.float32(2.0))),
             helper.make_node("Mul", ["x", "k"], ["y"]),
             helper.make_node("Relu", ["x"], ["unused"])]
    ops, report = _run(tiny_model(nodes, (3,)))
    assert ops == ["Mul"]
    assert report.rewrites == {"constant folded": 1, "dead nodes removed": 1}


def test_dead_nodes_constants_and_weights_go_and_are_counted():
    """An unread Constant is removed, not folded; a read one is folded, and when its reader
    is dead too, the weight it became goes after the reader."""
    def const(name: str) -> onnx.NodeProto:
        return helper.make_node("Constant", [], [name],
                                value=numpy_helper.from_array(np.float32(2.0)))

    nodes = [const("k_unread"), const("k"), helper.make_node("Mul", ["x", "k"], ["unused"]),
             helper.make_node("Relu", ["x"], ["y"])]
    ops, report = _run(tiny_model(nodes, (3,), {"w_dead": np.ones(64, np.float32)}))
    assert ops == ["Relu"]
    assert report.rewrites == {"constant folded": 1, "dead nodes removed": 1,
                               "dead Constant nodes removed": 1, "dead initializers removed": 2}


def _if_reading_outer_names() -> onnx.ModelProto:
    """y = If(cond, x + outer, x * k): the branches read the outer initializer `outer` and
    the Constant `k`; `dead` is read by nothing; `scale` is a graph input with a default."""
    def branch(op: str, operand: str) -> onnx.GraphProto:
        return helper.make_graph([helper.make_node(op, ["x", operand], [f"{op}_out"])], op, [],
                                 [helper.make_tensor_value_info(f"{op}_out", TensorProto.FLOAT,
                                                                [3])])

    nodes = [helper.make_node("Constant", [], ["cond"],
                              value=numpy_helper.from_array(np.array(False))),
             helper.make_node("Constant", [], ["k"],
                              value=numpy_helper.from_array(np.full(3, 3.0, np.float32))),
             helper.make_node("If", ["cond"], ["y"], then_branch=branch("Add", "outer"),
                              else_branch=branch("Mul", "k"))]
    inits = {"outer": np.full(3, 2.0, np.float32), "dead": np.ones(100, np.float32),
             "scale": np.ones(3, np.float32)}
    model = tiny_model(nodes, (3,), inits, out_shape=[3])
    model.graph.input.append(helper.make_tensor_value_info("scale", TensorProto.FLOAT, [3]))
    return model


def test_names_read_in_subgraphs_and_overridable_inputs_stay():
    ops, report = _run(_if_reading_outer_names())
    assert ops == ["If"]
    assert report.rewrites == {"constant folded": 2, "dead initializers removed": 1}
    out, _ = cleanup(_if_reading_outer_names())
    assert sorted(t.name for t in out.graph.initializer) == ["cond", "k", "outer", "scale"]
    assert [i.name for i in out.graph.input] == ["x", "scale"]


def _conv_bn_constants(c: int = 32) -> onnx.ModelProto:
    """Conv -> BatchNormalization, the conv weight and BN parameters as Constant nodes (as some
    exporters write them) rather than initializers."""
    rng = np.random.default_rng(3)
    params = {"w": rng.standard_normal((c, 8, 3, 3)), "gamma": rng.uniform(0.5, 1.5, c),
              "beta": rng.normal(0, 0.3, c), "mean": rng.normal(0, 0.3, c),
              "var": rng.uniform(0.3, 2.0, c)}
    consts = [helper.make_node("Constant", [], [n], value=numpy_helper.from_array(
        v.astype(np.float32), f"{n}_value")) for n, v in params.items()]
    nodes = [*consts, helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1]),
             helper.make_node("BatchNormalization", ["c", "gamma", "beta", "mean", "var"], ["y"])]
    return tiny_model(nodes, (1, 8, 12, 12))


def test_optimize_keeps_no_dead_weights_of_folded_batchnorm(cli, tmp_path):
    """`edgec optimize` on Conv -> BN whose parameters were Constant nodes: cleanup turns them
    into initializers, fold_batchnorm replaces the conv's weights and drops the BN; what that
    left unread must go, or the optimized file carries both copies (issue 33: 585 -> 853 KB)."""
    src = save(_conv_bn_constants(), tmp_path / "m.onnx")
    code, out, err = cli("optimize", src, "-o", tmp_path / "opt.onnx")
    assert code == 0, err
    assert "fold_batchnorm: conv+bn 1, dead initializers removed 5" in out
    opt = onnx.load(tmp_path / "opt.onnx")
    assert [n.op_type for n in opt.graph.node] == ["Conv"] and not dead_values(opt)
    assert len(opt.graph.initializer) == 2  # the folded weight and bias
    assert (tmp_path / "opt.onnx").stat().st_size < src.stat().st_size
    for seed in (0, 1):
        x = np.random.default_rng(seed).standard_normal((1, 8, 12, 12)).astype(np.float32)
        (want,), (got,) = ort_run(src, {"x": x}), ort_run(opt, {"x": x})
        assert np.abs(got - want).max() <= 1e-5 * np.abs(want).max()
    code, out, err = cli("optimize", tmp_path / "opt.onnx", "-o", tmp_path / "again.onnx")
    assert code == 0, err
    assert "cleanup: no change" in out and "fold_batchnorm: no change" in out
    again = onnx.load(tmp_path / "again.onnx")
    assert again.graph.SerializeToString() == opt.graph.SerializeToString()
