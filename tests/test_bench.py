"""`edgec bench`: latency against onnxruntime in one process, and the per-kernel profile."""

from __future__ import annotations

import json
import time

import pytest

from edgec import models, runtime
from edgec.compiler import validate
from edgec.harness.ort import ort_session

from conftest import foreign_target


@pytest.fixture
def lenet(tmp_path):
    return models.export("lenet5", tmp_path / "lenet5.onnx")


def test_bench_json_with_per_layer(cli, lenet):
    code, out, err = cli("bench", lenet, "--per-layer", "--seconds", "0.5", "--processes", "1",
                         "--json")
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
                         "--seconds", "0.3", "--processes", "1", "--json")
    assert code == 0, err
    r = json.loads(out)
    assert max(k["calls"] for k in r["layers"]) > 1
    assert sum(k["flops"] for k in r["layers"]) == pytest.approx(r["cost"]["flops"], rel=0.05)


def test_bench_artifact_folder_and_table(cli, lenet, tmp_path):
    assert cli("compile", lenet, "-o", tmp_path / "art", "--no-validate")[0] == 0
    code, out, err = cli("bench", tmp_path / "art", "--seconds", "0.5", "--processes", "2",
                         "--interleaved")
    assert code == 0, err
    assert "edgec / onnxruntime =" in out and ": OK" in out
    assert "each runtime alone, best of 2 fresh processes" in out
    assert "diagnostic  alternating in one process" in out


def test_bench_refuses_foreign_target(cli, lenet, tmp_path):
    code, _, err = cli("bench", lenet, "--target", foreign_target(tmp_path), "--seconds", "0.5")
    assert code == 2 and "--device ssh://" in err


def test_latency_settles_after_each_switch_and_spends_its_budget(lenet):
    """Every timed block follows untimed settling runs, and timing goes on for the whole budget.

    The model under test is a second onnxruntime session, so the call log is exact.
    """
    sess = ort_session(lenet, 1, optimize=False)
    feed = runtime.random_inputs([{"name": i.name, "shape": i.shape, "dtype": "float32"}
                                  for i in sess.get_inputs()], 0)
    calls = 0

    def run(f):
        nonlocal calls
        calls += 1
        return sess.run(None, f)

    t0 = time.perf_counter()
    r = validate.latency(run, lenet, feed, threads=1, budget_s=0.6)
    assert time.perf_counter() - t0 >= 0.6
    assert r["settle"] >= 2 and r["block"] >= 3
    rounds, rest = divmod(r["runs"], r["block"])
    assert rest == 0 and rounds >= 3
    assert calls == 3 + rounds * (r["settle"] + r["block"])  # 3 warm-up calls before the rounds
    assert r["ratio"] == pytest.approx(r["edgec_ms"] / r["onnxruntime_ms"])
