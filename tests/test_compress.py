"""compiler/compress (edgec compress): a trained digits model compressed on its data without
retraining. The written ONNX runs in onnxruntime and keeps the accuracy budget on samples the
search never saw; a budget no plan meets leaves the model dense (a warning, exit 0); bad input
is one line, exit 2; the latency check decides by timing here and by the cost model for
targets this machine cannot run; compile --compress records what it did."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest

from edgec.compiler import analysis
from edgec.compiler.compress import CompressOptions, compress
from edgec.compiler.compress.fit import LayerPlan
from edgec.compiler.compress.speed import COST_MODEL, measured, modelled
from edgec.harness.ort import ort_session
from edgec.models import digits

FAST = dict(calibration=48, held_out=96, form="grouped", latency=False)


@pytest.fixture(scope="module")
def data(digits_data):
    """The first 200 test images as model inputs; the last 160 are kept out of compress."""
    return digits_data


def _accuracy(model_path, images, labels):
    sess = ort_session(str(model_path), threads=0, optimize=True)
    x = digits.model_inputs(images)
    return float(np.mean([sess.run(None, {"input": x[i:i + 1]})[0].argmax() == labels[i]
                          for i in range(len(x))]))


@pytest.fixture(scope="module")
def compressed(data, tmp_path_factory):
    out = tmp_path_factory.mktemp("small") / "small.onnx"
    result = compress(digits.TRAINED_DIR / "digits_vgg.onnx", output=out,
                      options=CompressOptions(data=data, max_accuracy_drop=1.0, **FAST))
    return out, result


def test_fewer_macs_within_budget_on_unseen_samples(compressed):
    out, result = compressed
    assert result.macs_after * 2 <= result.macs_before
    assert result.compressed.drop <= 1.0 and not result.warnings
    model = onnx.load(out)
    onnx.checker.check_model(model, full_check=True)
    assert analysis.analyze(model).macs < analysis.analyze(
        digits.load("digits_vgg")).macs / 2
    # the 160 test images compress never read: within the budget plus sampling slack
    images, labels = digits.test_split()
    assert _accuracy(out, images[200:], labels[200:]) >= 1.0 - 0.025
    plan = json.loads(next(p.value for p in model.metadata_props if p.key == "edgec.compress"))
    assert plan == {r["name"]: [r["groups"], r["rank"]] for r in result.layers if r["rank"]}


def test_compressing_again_leaves_the_factors_alone(compressed, data, tmp_path):
    out, first = compressed
    again = compress(out, output=tmp_path / "again.onnx",
                     options=CompressOptions(data=data, **FAST))
    factor_convs = {f"{r['name']}_lr{i}" for r in first.layers if r["rank"] for i in (1, 2)}
    assert not factor_convs & {r["name"] for r in again.layers}


def test_a_budget_no_plan_meets_leaves_the_model_dense(data, tmp_path, cli):
    code, out, err = cli("compress", digits.TRAINED_DIR / "digits_vgg.onnx", "--data", data,
                         "-o", tmp_path / "d.onnx", "--flops", "0.02", "--max-accuracy-drop",
                         "0", "--form", "separable", "--no-latency-check")
    assert code == 0 and "left dense" in err and "warning" in err
    assert analysis.analyze(onnx.load(tmp_path / "d.onnx")).macs == \
        analysis.analyze(digits.load("digits_vgg")).macs


@pytest.mark.parametrize("args,message", [
    ([], "give --data PATH"),
    (["--data", "missing.npz"], "does not exist"),
    (["--data", "{data}", "--flops", "1.5"], "want a share of the MACs in (0, 1)"),
])
def test_bad_input_is_one_line_and_exit_2(args, message, data, tmp_path, cli):
    args = [a.format(data=data) for a in args]
    code, _, err = cli("compress", digits.TRAINED_DIR / "digits_vgg.onnx", "-o",
                       tmp_path / "x.onnx", *args)
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "x.onnx").exists()


def test_latency_check_times_here_and_models_elsewhere():
    rng = np.random.default_rng(0)
    w = rng.standard_normal((64, 64, 3, 3)).astype(np.float32)
    node = onnx.helper.make_node("Conv", ["x", "w"], ["y"], pads=[1, 1, 1, 1],
                                 kernel_shape=[3, 3])
    d = measured(node, w, [1, 64, 16, 16], LayerPlan(1, 8), "host")
    assert d.dense_ms > 0 and d.pair_ms > 0 and d.how == "measured on host"
    assert d.keep == (d.pair_ms < d.dense_ms)
    sep = modelled(w.shape, LayerPlan(64, 8))  # depthwise: 8/64 + 8/9 of the MACs, at 1/4
    assert sep.how == COST_MODEL and not sep.keep
    assert modelled(w.shape, LayerPlan(1, 8)).keep


def test_compile_compress_records_it_in_the_manifest(data, tmp_path, cli):
    code, out, err = cli("compile", digits.TRAINED_DIR / "digits_vgg.onnx", "-o",
                         tmp_path / "art", "--compress", "--data", data, "--form", "grouped",
                         "--no-latency-check", "--no-latency")
    assert code == 0, err
    manifest = json.loads((tmp_path / "art" / "manifest.json").read_text())
    record = manifest["compress"]
    assert record["source"].endswith("digits_vgg.onnx")
    assert record["conv_macs_after"] * 2 <= record["conv_macs_before"]
    assert manifest["cost"]["before"]["macs"] < analysis.analyze(
        digits.load("digits_vgg")).macs / 2
    assert "conv MACs" in out


def test_report_has_every_layer_and_the_tradeoff_plot(compressed, tmp_path):
    from edgec.compiler.compress.report import write_report

    _, result = compressed
    page = write_report(result, tmp_path / "rep", "digits_vgg")
    html = page.read_text()
    assert html.count("data:image/png;base64,") == 2  # tradeoff, MACs per conv (not timed)
    assert "src=\"http" not in html and all(r["name"] in html for r in result.layers)
    data = json.loads((tmp_path / "rep" / "report.json").read_text())
    assert [r["name"] for r in data["layers"]] == [r["name"] for r in result.layers]
    assert any(p["chosen"] for p in data["plans"])
    dense = [r for r in result.layers if r["rank"] is None]
    assert all(r["why_dense"] for r in dense)
    assert "![Conv MACs vs accuracy (plans measured)](tradeoff.png)" in (
        tmp_path / "rep" / "report.md").read_text()


def test_for_a_target_it_cannot_run_the_cost_model_decides(data, tmp_path):
    """arm: ranks in multiples of its 4 fp32 lanes where that leaves a choice, and the latency
    decision is the labelled cost model (nothing is timed)."""
    result = compress(digits.TRAINED_DIR / "digits_vgg.onnx", output=tmp_path / "arm.onnx",
                      options=CompressOptions(data=data, target="arm",
                                              **{**FAST, "latency": True}))
    assert result.decided_by == COST_MODEL
    kept = [r for r in result.layers if r["rank"]]
    assert kept and all(r["decided_by"] == COST_MODEL and r["dense_ms"] is None for r in kept)
    assert all(r["groups"] * r["rank"] % 4 == 0 for r in kept)
