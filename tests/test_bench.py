"""`edgec bench`: latency against onnxruntime in one process, and the per-kernel profile."""

from __future__ import annotations

import json

import pytest

from edgec import models


@pytest.fixture
def lenet(tmp_path):
    return models.export("lenet5", tmp_path / "lenet5.onnx")


def test_bench_json_with_per_layer(cli, lenet):
    code, out, err = cli("bench", lenet, "--per-layer", "--seconds", "0.5", "--json")
    assert code == 0, err
    r = json.loads(out)
    assert r["agreement"]["ok"]
    assert r["ratio"] == pytest.approx(r["edgec_ms"] / r["onnxruntime_ms"])
    assert r["runs"] >= 5 and r["threads"] >= 1
    kernels = {k["kernel"]: k for k in r["layers"]}
    assert any(name.startswith("fused_conv2d") for name in kernels)
    assert sum(k["share"] for k in r["layers"]) == pytest.approx(1.0)
    # TVM's estimate of the kernels' FLOPs against edgec's own count (bias and tanh included).
    assert sum(k["flops"] for k in r["layers"]) == pytest.approx(r["cost"]["flops"], rel=0.05)


def test_per_layer_flops_count_every_call(cli, artifacts):
    """MobileNetV2 runs some kernels several times per inference; each call's FLOPs count."""
    code, out, err = cli("bench", artifacts("mobilenet_v2", "host"), "--per-layer",
                         "--seconds", "0.3", "--json")
    assert code == 0, err
    r = json.loads(out)
    assert max(k["calls"] for k in r["layers"]) > 1
    assert sum(k["flops"] for k in r["layers"]) == pytest.approx(r["cost"]["flops"], rel=0.05)


def test_bench_artifact_folder_and_table(cli, lenet, tmp_path):
    assert cli("compile", lenet, "-o", tmp_path / "art", "--no-validate")[0] == 0
    code, out, err = cli("bench", tmp_path / "art", "--seconds", "0.5")
    assert code == 0, err
    assert "edgec / onnxruntime =" in out and ": OK" in out


def test_bench_refuses_foreign_target(cli, lenet):
    code, _, err = cli("bench", lenet, "--target", "arm", "--seconds", "0.5")
    assert code == 2 and "--device ssh://" in err
