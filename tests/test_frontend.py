"""Frontend: every bad input gets one clear line, exit code 2, and no output folder; real
exporter shapes (dynamic batch, Paddle-style Shape->Gather->Concat->Reshape) go through."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from edgec.compiler import frontend
from edgec.errors import EdgecError

from conftest import ort_run, save


def _conv_model(batch="N", opset=17, ir=8, weight=None, extra_nodes=()) -> onnx.ModelProto:
    w = weight if weight is not None else np.random.default_rng(0).standard_normal(
        (4, 3, 3, 3)).astype(np.float32)
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], name="conv0", pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c"], ["y"], name="relu0"), *extra_nodes]
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [batch, 3, 8, 8])],
        [helper.make_tensor_value_info(nodes[-1].output[0], TensorProto.FLOAT,
                                       None if extra_nodes else [batch, 4, 8, 8])],
        [numpy_helper.from_array(w, "w")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = ir
    return model


def _refused(cli, tmp_path, model_path, *extra, match: str) -> str:
    out = tmp_path / "out" / "artifact"
    code, stdout, stderr = cli("compile", model_path, "-o", out, "--target", "host", *extra)
    assert code == 2, stderr
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("edgec: error: "), stderr
    assert match in lines[0], lines[0]
    assert "Traceback" not in stderr
    assert not (tmp_path / "out").exists(), "a refused compile must write nothing"
    return lines[0]


def test_missing_file(cli, tmp_path):
    _refused(cli, tmp_path, tmp_path / "nope.onnx", match="model file")


def test_not_onnx(cli, tmp_path):
    path = tmp_path / "notes.onnx"
    path.write_text("this is a text file, not a protobuf\n")
    _refused(cli, tmp_path, path, match="is not an ONNX model")


def test_truncated_protobuf(cli, tmp_path):
    data = _conv_model(batch=1).SerializeToString()
    path = tmp_path / "cut.onnx"
    path.write_bytes(data[: len(data) // 2])
    _refused(cli, tmp_path, path, match="is not an ONNX model")


def test_ir_version_too_new(cli, tmp_path):
    path = save(_conv_model(batch=1, ir=onnx.IR_VERSION + 5), tmp_path / "new.onnx")
    _refused(cli, tmp_path, path, match=f"IR version {onnx.IR_VERSION + 5}")


def test_old_opset_is_converted():
    model = _conv_model(batch=1, opset=9)
    report = frontend.FrontendReport(source="in-memory")
    converted = frontend.check_versions(model, report)
    assert converted.opset_import[0].version == frontend.CONVERT_TO_OPSET
    assert "converted opset 9" in report.notes[0]


def test_unconvertible_opset(cli, tmp_path):
    path = save(_conv_model(batch=1, opset=frontend.MAX_OPSET + 3), tmp_path / "future.onnx")
    _refused(cli, tmp_path, path, match="opset")


def test_checker_failure(cli, tmp_path):
    model = _conv_model(batch=1)
    model.graph.node[1].input[0] = "does_not_exist"
    path = save(model, tmp_path / "broken.onnx")
    _refused(cli, tmp_path, path, match="ONNX checker")


def test_unpinned_dynamic_dim_names_input_dim_and_flag(cli, tmp_path):
    path = save(_conv_model(batch="batch"), tmp_path / "dyn.onnx")
    line = _refused(cli, tmp_path, path, match="input 'x' has a dynamic dim 0 ('batch')")
    assert "--input-shape x=1,3,8,8" in line


@pytest.mark.parametrize("spec, match", [
    ("y=1,3,8,8", "not a model input"),
    ("x=1,3,8", "has 3 dims"),
    ("x=1,3,9,8", "fixes it at 8"),
    ("x=1,a,8,8", "bad --input-shape"),
])
def test_bad_input_shape_flag(cli, tmp_path, spec, match):
    path = save(_conv_model(batch="batch"), tmp_path / "dyn.onnx")
    _refused(cli, tmp_path, path, "--input-shape", spec, match=match)


def test_unsupported_ops_listed_all_at_once(cli, tmp_path):
    extra = [helper.make_node("FancyOp", ["y"], ["z"], name="fancy1", domain="acme"),
             helper.make_node("QLinearConv", ["z", "s", "zp", "w", "s", "zp", "s", "zp"], ["q"],
                              name="qconv7"),
             helper.make_node("FancyOp", ["q"], ["r"], name="fancy2", domain="acme")]
    model = _conv_model(batch=1, extra_nodes=extra)
    model.opset_import.append(helper.make_opsetid("acme", 1))
    path = save(model, tmp_path / "custom.onnx")
    line = _refused(cli, tmp_path, path, match="unsupported ops:")
    assert "acme.FancyOp (node fancy1)" in line and "QLinearConv (node qconv7)" in line
    assert "fancy2" not in line, "each op type is named once, with its first node"


def test_external_data_outside_model_folder_refused(cli, tmp_path):
    secret = tmp_path / "secret.bin"
    secret.write_bytes(np.zeros(4 * 3 * 3 * 3, np.float32).tobytes())
    model = _conv_model(batch=1)
    w = model.graph.initializer[0]
    w.ClearField("raw_data")
    w.data_location = TensorProto.EXTERNAL
    for key, value in (("location", "../secret.bin"), ("offset", "0"), ("length", "432")):
        entry = w.external_data.add()
        entry.key, entry.value = key, value
    (tmp_path / "models").mkdir()
    path = save(model, tmp_path / "models" / "ext.onnx")
    _refused(cli, tmp_path, path, match="path traversal")


def test_external_data_inside_folder_loads(tmp_path):
    model = _conv_model(batch=1, weight=np.ones((4, 3, 3, 3), np.float32))
    onnx.save_model(model, str(tmp_path / "m.onnx"), save_as_external_data=True,
                    all_tensors_to_one_file=True, location="m.data", size_threshold=0)
    loaded, _ = frontend.load(tmp_path / "m.onnx")
    assert numpy_helper.to_array(loaded.graph.initializer[0]).sum() == 4 * 27


def test_nan_weights_warn_with_tensor_name(cli, tmp_path):
    w = np.ones((4, 3, 3, 3), np.float32)
    w[0, 0, 0, 0] = np.nan
    path = save(_conv_model(batch=1, weight=w), tmp_path / "nan.onnx")
    _, report = frontend.load(path)
    assert report.warnings == ["weight 'w' holds 1 NaN and 0 Inf values"]


def _paddle_style(batch="N") -> onnx.ModelProto:
    """Conv -> Shape -> Gather(0) -> Unsqueeze -> Concat(n, -1) -> Reshape -> MatMul, the way
    paddle2onnx flattens: the Reshape's shape is computed from the dynamic batch at run time."""
    rng = np.random.default_rng(1)
    inits = [numpy_helper.from_array(rng.standard_normal((4, 3, 3, 3)).astype(np.float32), "w"),
             numpy_helper.from_array(np.array(0, np.int64), "zero"),
             numpy_helper.from_array(np.array([0], np.int64), "axes0"),
             numpy_helper.from_array(np.array([-1], np.int64), "minus1"),
             numpy_helper.from_array(rng.standard_normal((4 * 8 * 8, 5)).astype(np.float32), "fc")]
    nodes = [
        helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1]),
        helper.make_node("Shape", ["c"], ["shape"]),
        helper.make_node("Gather", ["shape", "zero"], ["n"], axis=0),
        helper.make_node("Unsqueeze", ["n", "axes0"], ["n1"]),
        helper.make_node("Concat", ["n1", "minus1"], ["new_shape"], axis=0),
        helper.make_node("Reshape", ["c", "new_shape"], ["flat"]),
        helper.make_node("MatMul", ["flat", "fc"], ["y"]),
    ]
    graph = helper.make_graph(
        nodes, "paddle", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [batch, 3, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [batch, 5])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    return model


def test_paddle_shape_chain_folds_to_a_static_reshape(tmp_path):
    path = save(_paddle_style(), tmp_path / "paddle.onnx")
    model, report = frontend.load(path, input_shapes={"x": [2, 3, 8, 8]})
    ops = [n.op_type for n in model.graph.node]
    assert ops == ["Conv", "Reshape", "MatMul"], ops
    shape_init = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    assert shape_init[model.graph.node[1].input[1]].tolist() == [2, -1]
    assert any(n.startswith("fold_constants: Concat 1") for n in report.notes)
    x = np.random.default_rng(2).standard_normal((2, 3, 8, 8)).astype(np.float32)
    ref = ort_run(path, {"x": x})[0]
    got = ort_run(model, {"x": x})[0]
    np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-5)


def test_paddle_style_compiles_and_matches(cli, tmp_path):
    path = save(_paddle_style(), tmp_path / "paddle.onnx")
    code, out, err = cli("compile", path, "-o", tmp_path / "a", "--input-shape", "x=2,3,8,8")
    assert code == 0, err
    assert "OK" in out and "MISMATCH" not in out


def test_every_tensor_static_after_load(tmp_path):
    path = save(_conv_model(batch="N"), tmp_path / "dyn.onnx")
    model, report = frontend.load(path, input_shapes={"x": [3, 3, 8, 8]})
    assert report.input_shapes == {"x": [3, 3, 8, 8]}
    out = model.graph.output[0].type.tensor_type.shape
    assert [d.dim_value for d in out.dim] == [3, 4, 8, 8]


def test_load_raises_edgec_error_directly():
    with pytest.raises(EdgecError, match="not found"):
        frontend.load("/nonexistent/model.onnx")
