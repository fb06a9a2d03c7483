"""compiler/quantize (edgec quantize): QDQ int8 ONNX from an fp32 model and data. The written
model runs in onnxruntime (its int8 kernels) within the accuracy budget on samples quantize
never saw; a layer whose int8 form breaks the budget stays fp32 and says why; equalization
rescues a pair per-tensor int8 cannot hold; a budget nothing meets leaves the model fp32 (a
warning, exit 0); bad input is one line, exit 2, nothing written; compile --int8 records it."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
from onnx import helper, numpy_helper

from edgec.compiler.quantize import QuantizeOptions, quantize
from edgec.harness.ort import ort_session
from edgec.models import digits

from conftest import save, tiny_model

FAST = dict(calibration=64, held_out=136, activations="uint8")


@pytest.fixture(scope="module")
def data(digits_data):
    """The first 200 test images as model inputs; the last 160 are kept out of quantize."""
    return digits_data


def _top1(model, x: np.ndarray) -> np.ndarray:
    src = model.SerializeToString() if isinstance(model, onnx.ModelProto) else str(model)
    sess = ort_session(src, threads=0, optimize=True)  # onnxruntime's int8 kernels
    name = sess.get_inputs()[0].name
    return np.array([sess.run(None, {name: x[i:i + 1]})[0].argmax() for i in range(len(x))])


@pytest.fixture(scope="module")
def quantized(data, tmp_path_factory):
    out = tmp_path_factory.mktemp("int8") / "vgg.int8.onnx"
    result = quantize(digits.TRAINED_DIR / "digits_vgg.onnx", output=out,
                      options=QuantizeOptions(data=data, **FAST))
    return out, result


def test_int8_within_budget_on_unseen_samples(quantized):
    out, result = quantized
    model = onnx.load(out)
    onnx.checker.check_model(model, full_check=True)
    ops = [n.op_type for n in model.graph.node]
    assert all(r["int8"] for r in result.layers) and result.quantized.drop <= 0.5
    assert ops.count("QuantizeLinear") >= len(result.layers)
    before, after = result.weight_bytes  # int8 weights: about a quarter of the bytes
    assert after < before / 3.5
    inits = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    convs = [n for n in model.graph.node if n.op_type in ("Conv", "Gemm")]
    for node in convs:  # int8 weights per output channel, int32 bias, both dequantized
        w_dq = next(n for n in model.graph.node if n.output[0] == node.input[1])
        assert inits[w_dq.input[0]].dtype == np.int8 and inits[w_dq.input[1]].ndim == 1
        b_dq = next(n for n in model.graph.node if n.output[0] == node.input[2])
        assert inits[b_dq.input[0]].dtype == np.int32
    images, labels = digits.test_split()
    x = digits.model_inputs(images)
    fp32, int8 = _top1(digits.load("digits_vgg"), x), _top1(out, x)
    unseen = slice(200, None)
    drop = np.mean(fp32[unseen] == labels[unseen]) - np.mean(int8[unseen] == labels[unseen])
    assert drop <= 1 / 160 + 1e-9  # 0.5 points budget: at most one of the 160 unseen images
    assert np.mean(fp32 == int8) >= 0.99
    meta = json.loads(next(p.value for p in model.metadata_props if p.key == "edgec.quantize"))
    assert meta["activations"] == "uint8" and meta["method"] == "percentile"


def _skewed(equalizable: bool) -> onnx.ModelProto:
    """conv -> relu -> 1x1 conv -> GAP -> Gemm, where channel 0 between the convs is 1000x
    the others (its weights scaled up in the first conv, down in the second: the fp32
    function is unchanged, but one per-tensor int8 scale cannot hold channel 0 and the rest)."""
    rng = np.random.default_rng(3)
    w1 = rng.standard_normal((8, 4, 3, 3)).astype(np.float32)
    w2 = rng.standard_normal((8, 8, 1, 1)).astype(np.float32)
    w1[0] *= 1000
    w2[:, 0] /= 1000
    inits = {"w1": w1, "b1": np.zeros(8, np.float32), "w2": w2, "b2": np.zeros(8, np.float32),
             "fc": rng.standard_normal((10, 8)).astype(np.float32),
             "fb": np.zeros(10, np.float32)}
    act = "Relu" if equalizable else "Sigmoid"
    nodes = [helper.make_node("Conv", ["x", "w1", "b1"], ["a"], pads=[1] * 4, name="c1"),
             helper.make_node(act, ["a"], ["r"]),
             helper.make_node("Conv", ["r", "w2", "b2"], ["c"], name="c2"),
             helper.make_node("GlobalAveragePool", ["c"], ["g"]),
             helper.make_node("Flatten", ["g"], ["f"]),
             helper.make_node("Gemm", ["f", "fc", "fb"], ["y"], transB=1, name="fc")]
    return tiny_model(nodes, [1, 4, 8, 8], inits)


def _data(model: onnx.ModelProto, path, n: int = 200):
    """`n` random inputs labelled by the fp32 model's top-1."""
    x = np.random.default_rng(4).standard_normal((n, 4, 8, 8)).astype(np.float32)
    np.savez(path, x=x, labels=_top1(model, x))
    return path


def test_sensitive_layers_stay_fp32_and_say_why(tmp_path):
    model = save(_skewed(equalizable=True), tmp_path / "skewed.onnx")
    data = _data(onnx.load(model), tmp_path / "d.npz")
    opts = dict(data=data, max_accuracy_drop=1.0, equalize="off", **FAST)
    result = quantize(model, output=tmp_path / "q.onnx", options=QuantizeOptions(**opts))
    runs = {r["name"]: r for r in result.layers}
    assert not runs["c2"]["int8"] and "most sensitive" in runs["c2"]["why_fp32"]
    assert runs["fc"]["int8"] and result.quantized.drop <= 1.0
    assert runs["c2"]["sqnr_alone_db"] < runs["fc"]["sqnr_alone_db"]
    x = np.load(data)["x"]
    agree = np.mean(_top1(tmp_path / "q.onnx", x) == np.load(data)["labels"])
    assert agree >= 0.99 - 0.01  # the budget (1 point) plus held-out sampling slack
    # equalization balances the pair: then every layer fits
    eq = quantize(model, output=tmp_path / "eq.onnx",
                  options=QuantizeOptions(**{**opts, "equalize": "relu"}))
    assert all(r["int8"] for r in eq.layers), eq.layers
    assert eq.equalized["rewrites"] == {"conv pairs equalized": 1}


def test_a_budget_nothing_meets_leaves_fp32(tmp_path, cli):
    """One conv whose input channel 0 is 1000x the others: per-tensor int8 of its input
    erases channels 1-3, so at a budget of 0 nothing can be int8."""
    rng = np.random.default_rng(5)
    w = rng.standard_normal((10, 4, 3, 3)).astype(np.float32)
    w[:, 0] /= 1000
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], name="c"),
             helper.make_node("GlobalAveragePool", ["c"], ["g"]),
             helper.make_node("Flatten", ["g"], ["y"])]
    model = save(tiny_model(nodes, [1, 4, 8, 8], {"w": w}), tmp_path / "one.onnx")
    x = rng.standard_normal((200, 4, 8, 8)).astype(np.float32)
    x[:, 0] *= 1000
    np.savez(tmp_path / "d.npz", x=x, labels=_top1(onnx.load(model), x))
    code, out, err = cli("quantize", model, "--data", tmp_path / "d.npz", "-o",
                         tmp_path / "q.onnx", "--max-accuracy-drop", "0", "--activations",
                         "uint8")
    assert code == 0 and "warning: no layer runs in int8" in err
    written = onnx.load(tmp_path / "q.onnx")
    assert not [n for n in written.graph.node if "Quantize" in n.op_type]
    assert "no: among the 1 most sensitive" in out
    np.testing.assert_array_equal(_top1(written, x), np.load(tmp_path / "d.npz")["labels"])


@pytest.mark.parametrize("args,message", [
    ([], "give --data PATH"),
    (["--data", "missing.npz"], "does not exist"),
    (["--data", "{wrong}"], "{wrong}"),
    (["--data", "{empty}"], "holds zero samples"),
    (["--data", "{ints}"], "is int64, the model's input 'input' takes float32"),
    (["--data", "{data}", "--max-accuracy-drop", "-1"], "want >= 0"),
])
def test_bad_input_is_one_line_and_exit_2(args, message, data, tmp_path, cli):
    wrong, empty, ints = (tmp_path / f"{n}.npz" for n in ("wrong", "empty", "ints"))
    np.savez(wrong, input=np.zeros((8, 3, 32, 32), np.float32))  # 3 channels, not 1
    np.savez(empty, input=np.zeros((0, 1, 32, 32), np.float32))
    np.savez(ints, input=np.zeros((8, 1, 32, 32), np.int64))
    args = [a.format(data=data, wrong=wrong, empty=empty, ints=ints) for a in args]
    code, _, err = cli("quantize", digits.TRAINED_DIR / "digits_vgg.onnx", "-o",
                       tmp_path / "x.onnx", *args)
    assert code == 2 and message.format(wrong=wrong) in err, err
    assert len(err.strip().splitlines()) == 1
    assert not (tmp_path / "x.onnx").exists()


def test_quantizing_a_quantized_model_is_refused(quantized, data, tmp_path, cli):
    code, _, err = cli("quantize", quantized[0], "--data", data, "-o", tmp_path / "x.onnx")
    assert code == 2 and "already int8" in err and len(err.strip().splitlines()) == 1


def test_report_has_every_layer(quantized, tmp_path):
    from edgec.compiler.quantize.report import write_report

    _, result = quantized
    page = write_report(result, tmp_path / "rep", "digits_vgg")
    html = page.read_text()
    assert html.count("data:image/png;base64,") == 2
    assert all(r["name"] in html for r in result.layers)
    data = json.loads((tmp_path / "rep" / "report.json").read_text())
    assert [r["name"] for r in data["layers"]] == [r["name"] for r in result.layers]
    assert any(t["chosen"] for t in data["tried"])


def test_compile_int8_builds_int8_kernels_and_records_it(data, tmp_path, cli):
    code, out, err = cli("compile", digits.TRAINED_DIR / "digits_vgg.onnx", "-o",
                         tmp_path / "art", "--int8", "--data", data, "--activations", "uint8",
                         "--no-latency")
    assert code == 0, err
    manifest = json.loads((tmp_path / "art" / "manifest.json").read_text())
    record = manifest["quantize"]
    assert record["source"].endswith("digits_vgg.onnx") and record["activations"] == "uint8"
    assert all(r["int8"] for r in record["layers"])
    # every conv and the Gemm head is an int8 kernel, checked against onnxruntime on the QDQ
    # model
    rules = list(manifest["codegen"]["kernels"].values())
    assert rules.count("int8") == sum(r["op"] in ("Conv", "Gemm") for r in record["layers"])
    assert "unscheduled" not in rules
    assert all(row["ok"] for row in manifest["validation"]["outputs"])
    assert "layers int8" in out
