"""Models compiled for OpenCL and run by edgec's OpenCL runtime on PoCL (OpenCL on this CPU):
compile's own check against onnxruntime passes for zoo models of every kind of layer, a loaded
artifact and the C++ runner of a bundle stay right over several calls, the phones' bundles
(mali, adreno) carry an aarch64 OpenCL runtime whose runner starts under qemu with an empty
sysroot and stops in one line for want of an OpenCL driver, and latency measured on PoCL is
labelled as not GPU speed.

Reference: onnxruntime on the original model, within compiler/tolerance.py's RTOL x max|ref|
(compile's check scales that with the computation's rounding noise).
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from edgec import models, targets
from edgec.compiler.tolerance import RTOL, tolerance
from edgec.runtime.device import run_bundle

from conftest import call_several, conv_relu_conv, elf_machine, ort_run

pytestmark = pytest.mark.skipif(not targets.device_present("opencl"),
                                reason="no OpenCL platform (./dev installs pocl-opencl-icd)")

X_SHAPE = [1, 16, 28, 28]  # conftest.conv_relu_conv's input
QUICK = ["lenet5", "digits_resnet", "mobilenet_v3_small", "conv1d_timeseries",
         "convtranspose_decoder", "gem_head"]  # SE + hard-swish, 1D, transposed convs, GeM


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> Path:
    return conv_relu_conv(tmp_path_factory.mktemp("opencl") / "m.onnx")


@pytest.fixture(scope="module")
def artifact(model) -> Path:
    import edgec

    out = model.parent / "art"
    edgec.compile(model, output=out, target="opencl", bundle=True, latency=False)
    return out


@pytest.mark.parametrize("name", QUICK + [
    pytest.param(n, marks=pytest.mark.slow) for n in models.MODELS if n not in QUICK])
def test_zoo_model_agrees_with_onnxruntime_on_pocl(name, tmp_path):
    import edgec

    path = models.export(name, tmp_path / f"{name}.onnx")
    result = edgec.compile(path, output=tmp_path / "out", target="opencl", latency=False)
    check = result.manifest["validation"]
    assert check["ok"] and check["checks"] == 2, check
    assert "unscheduled" not in result.manifest["codegen"]["kernels"].values()


def test_a_loaded_artifact_stays_right_over_calls(model, artifact):
    from edgec import runtime

    loaded = runtime.load(artifact)
    assert loaded.device == "opencl"
    call_several(lambda x: loaded(x=x)["y"], __import__("onnx").load(str(model)), X_SHAPE,
                 calls=4, rtol=RTOL)


def test_the_bundle_runner_runs_opencl_here(model, artifact):
    for seed in (1, 2):
        x = np.random.default_rng(seed).standard_normal(X_SHAPE).astype(np.float32)
        result = run_bundle(artifact, device="local", feed={"x": x}, repeat=3, warmup=1)
        want = ort_run(model, {"x": x})[0]
        tol = tolerance(float(np.abs(want).max()), 0.0, rtol=RTOL)
        assert np.abs(result.outputs["y"] - want).max() <= tol
        assert result.latency["runs"] == 3
    assert (artifact / "lib" / "libedgec_opencl.so").is_file()


@pytest.mark.skipif(shutil.which("qemu-aarch64") is None, reason="qemu-user is needed")
@pytest.mark.parametrize("target", ["mali", "adreno"])
def test_phone_bundle_starts_under_qemu_and_names_the_missing_driver(model, target, tmp_path):
    import edgec

    out = tmp_path / target
    result = edgec.compile(model, output=out, target=target, bundle=True)
    assert "does not run on this machine" in result.manifest["validation"]["skipped"]
    for rel in ("edgec-run", "model.so", "lib/libedgec_opencl.so", "lib/libc.so.6"):
        assert elf_machine(out / rel) == "aarch64", rel
    assert "through OpenCL" in (out / "README.txt").read_text()
    empty = tmp_path / "empty-sysroot"
    empty.mkdir()
    done = subprocess.run(["sh", str(out / "run.sh")], capture_output=True, text=True,
                          timeout=300, env={"PATH": "/usr/bin:/bin",
                                            "EDGEC_EMULATOR": f"qemu-aarch64 -L {empty}"})
    assert done.returncode == 2, done.stderr
    assert done.stderr.strip().splitlines()[-1].startswith(
        "edgec-run: error: no OpenCL platform: no OpenCL library found (tried libOpenCL.so.1")


def test_latency_on_pocl_is_labelled_not_gpu_speed(cli, artifact):
    code, out, _ = cli("bench", str(artifact), "--seconds", "0.4", "--processes", "1")
    assert code == 0, out
    ratio = next(ln for ln in out.splitlines() if ln.startswith("ratio"))
    assert ratio.endswith("; OpenCL on CPU (PoCL): not GPU speed")
    assert "OK" in next(ln for ln in out.splitlines() if ln.startswith("outputs"))
    manifest = json.loads((artifact / "manifest.json").read_text())
    assert manifest["target"]["device"] == "opencl"
