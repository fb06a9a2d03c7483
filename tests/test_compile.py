"""Every reference model compiles for host and matches onnxruntime; builds for arm as aarch64.

The host check here is independent of the compiler's own validation: a fresh seed, a fresh
onnxruntime session (ORT_DISABLE_ALL) on the original model, the artifact loaded through the
public runtime API. Tolerance: max|diff| <= 1e-4 * max|ref|.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from edgec import models, runtime
from edgec.targets import host_arch

from conftest import elf_machine, ort_run

SLOW = {"alexnet", "resnet18"}
MODEL_PARAMS = [pytest.param(n, marks=pytest.mark.slow) if n in SLOW else n
                for n in models.MODELS]


@pytest.mark.parametrize("name", MODEL_PARAMS)
def test_host_matches_onnxruntime(artifacts, tmp_path, name):
    folder = artifacts(name, "host")
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["validation"]["ok"] is True
    assert elf_machine(folder / "model.so") == host_arch()

    model = runtime.load(folder)
    feed = runtime.random_inputs(model.inputs, seed=1234)
    got = model(**feed)
    src = tmp_path / f"{name}.onnx"
    models.export(name, src)
    ref = ort_run(src, feed)
    assert list(got) == [o["name"] for o in manifest["outputs"]]
    for out, want in zip(got.values(), ref):
        assert out.shape == want.shape
        scale = np.abs(want).max()
        assert np.abs(out - want).max() <= 1e-4 * scale, (name, np.abs(out - want).max(), scale)


# These also build for arm as bundles and run under qemu in test_deploy's default set; their
# plain arm builds (~70 s) only repeat that.
RUN_UNDER_QEMU = {"mobilenet_v1", "mobilenet_v3_small", "shufflenet_v2", "squeezenet1_1"}


@pytest.mark.parametrize("name", [pytest.param(n, marks=pytest.mark.slow)
                                  if n in RUN_UNDER_QEMU else n for n in models.MODELS])
def test_arm_build_is_aarch64_elf(artifacts, name):
    folder = artifacts(name, "arm")
    manifest = json.loads((folder / "manifest.json").read_text())
    assert elf_machine(folder / "model.so") == "aarch64"
    assert manifest["target"]["tvm"]["mtriple"] == "aarch64-linux-gnu"
    assert ("skipped" in manifest["validation"]) == (host_arch() != "aarch64")


@pytest.mark.parametrize("target", ["rpi4", "rpi5"])
def test_board_targets_build(artifacts, target):
    # the bundle test_deploy runs under qemu for these boards: one build serves both
    folder = artifacts("mobilenet_v3_small", target, bundle=True)
    manifest = json.loads((folder / "manifest.json").read_text())
    assert elf_machine(folder / "model.so") == "aarch64"
    assert manifest["target"]["tvm"]["mcpu"] in ("cortex-a72", "cortex-a76")


def test_manifest_contents(artifacts):
    folder = artifacts("lenet5", "host")
    m = json.loads((folder / "manifest.json").read_text())
    from edgec.runtime.artifact import sha256_file

    assert m["sha256"] == sha256_file(folder / "model.so")
    assert m["inputs"] == [{"name": "input", "shape": [1, 1, 32, 32], "dtype": "float32",
                            "file": "input.npy"}]
    assert m["outputs"] == [{"name": "output", "shape": [1, 10], "dtype": "float32",
                             "file": "output.npy"}]
    assert m["target"]["name"] == "host" and m["target"]["device"] == "cpu"
    from edgec.compiler import PHASES

    assert list(m["phases"]) == list(PHASES)  # each phase ran, in order, and was timed
    assert all(s >= 0 for s in m["phases"].values())
    assert set(m["versions"]) >= {"edgec", "apache-tvm", "apache-tvm-ffi", "onnx", "onnxruntime"}
    assert m["cost"]["before"]["params"] == 61706
    assert m["cost"]["before"]["macs"] > 0
    assert (folder / "model.onnx").is_file()


def test_compile_cli_prints_flops_check_and_latency(cli, tmp_path):
    src = tmp_path / "lenet5.onnx"
    models.export("lenet5", src)
    code, out, err = cli("compile", src, "-o", tmp_path / "art")
    assert code == 0, err
    assert "FLOPs" in out and "61,706 params" in out
    assert "vs tolerance" in out and "rounding noise" in out and ": OK" in out
    assert "x ORT" in out and "each runtime alone, best of 2 fresh processes" in out
    lat = json.loads((tmp_path / "art" / "manifest.json").read_text())["validation"]["latency"]
    assert lat["edgec_ms"] > 0 and lat["onnxruntime_ms"] > 0 and lat["method"] == "alone"
    assert lat["ratio"] == pytest.approx(lat["edgec_ms"] / lat["onnxruntime_ms"])
    assert len(lat["edgec_processes_ms"]) == 2 and min(lat["edgec_processes_ms"]) == \
        lat["edgec_ms"]


def test_recompile_replaces_folder_atomically(tmp_path):
    import edgec

    src = tmp_path / "m.onnx"
    models.export("lenet5", src)
    out = tmp_path / "art"
    out.mkdir()
    (out / "stale.txt").write_text("old")
    edgec.compile(src, output=out, target="host", validate=False)
    assert not (out / "stale.txt").exists()
    assert sorted(p.name for p in out.iterdir()) == ["manifest.json", "model.onnx", "model.so"]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_cpu_pipeline_names_its_phases():
    """The phases the pipelines docstring lists, in its order; tuning's prefix ends before
    the schedules."""
    from edgec import targets
    from edgec.compiler.codegen.pipelines import PIPELINES, Lowering, fused_phases

    t = targets.get("host").tvm_target()
    with t:
        names = [n for n, _ in PIPELINES["cpu"].phases(t, Lowering())]
        assert names == ["dispatch", "int8", "layout", "legalize", "merge", "constants",
                         "tuned", "schedule", "prepack", "lower", "inputs"]
        assert [n for n, _ in fused_phases(t)] == names[:6]
