"""CUDA builds (targets `cuda` and `jetson-orin`, the `gpu` pipeline), checked without a GPU:
the device's machine code is in model.so (a fatbin, no CUDA C source), every kernel is on the
GPU, a build without GPU schedules is refused by name, fp16 builds compute in half, and a
Jetson artifact's host code is aarch64. Running is left to a machine with a GPU
(benchmarks/gpu.sh); here a CUDA artifact refuses to load in one line."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from edgec import models, targets
from edgec.compiler import codegen
from edgec.compiler.codegen import pipelines
from edgec.compiler.codegen.gpu import checks, nvcc
from edgec.errors import EdgecError

from conftest import target_without_phases

MODEL = "lenet5"  # the smallest zoo model: nvcc compiles it in a few seconds
EM_AARCH64 = 183
EM_X86_64 = 62


def _shapes(model) -> dict[str, list[int]]:
    return {i.name: [d.dim_value for d in i.type.tensor_type.shape.dim] for i in model.graph.input}


@pytest.fixture(scope="module")
def onnx_path(tmp_path_factory) -> Path:
    return models.export(MODEL, tmp_path_factory.mktemp("cuda") / f"{MODEL}.onnx")


@pytest.fixture(scope="module")
def cuda_artifact(onnx_path, tmp_path_factory) -> Path:
    """`edgec compile --target cuda`, once for the module."""
    import edgec

    out = tmp_path_factory.mktemp("cuda") / "art"
    edgec.compile(onnx_path, output=out, target="cuda", latency=False)
    return out


@pytest.fixture(scope="module")
def jetson_library(tmp_path_factory) -> Path:
    model = models.build(MODEL)
    target = targets.get("jetson-orin")
    executable = codegen.build(model, target, _shapes(model))
    return codegen.export(executable, tmp_path_factory.mktemp("jetson") / "model.so", target)


def _machine(path: Path) -> int:
    data = path.read_bytes()
    assert data[:4] == b"\x7fELF"
    return int.from_bytes(data[18:20], "little")


def test_targets_are_cuda_with_the_gpu_pipeline():
    orin = targets.get("jetson-orin")
    assert (orin.device, orin.pipeline, orin.arch) == ("cuda", "gpu", "aarch64")
    tvm_target = orin.tvm_target()
    assert tvm_target.kind.name == "cuda" and str(tvm_target.attrs["arch"]) == "sm_87"
    assert str(tvm_target.host.attrs["mtriple"]) == "aarch64-linux-gnu"
    cuda = targets.get("cuda")
    assert re.fullmatch(r"sm_\d+", str(cuda.tvm_target().attrs["arch"]))
    assert cuda.tvm["host"]["mtriple"] == f"{targets.host_arch()}-linux-gnu"


def test_cuda_artifact_holds_machine_code_not_source(cuda_artifact):
    manifest = json.loads((cuda_artifact / "manifest.json").read_text())
    arch = targets.get("cuda").tvm["arch"]
    assert manifest["target"]["device"] == "cuda"
    assert manifest["codegen"]["pipeline"] == "gpu"
    library = (cuda_artifact / "model.so").read_bytes()
    assert not any(mark in library for mark in checks.SOURCE_MARKS)
    assert checks.fatbin_entries(library) == [("elf", arch)]  # machine code only, no PTX
    assert _machine(cuda_artifact / "model.so") == EM_X86_64


def test_jetson_host_code_is_aarch64_and_kernels_sm87(jetson_library):
    assert _machine(jetson_library) == EM_AARCH64
    assert checks.check_library(jetson_library, "sm_87") == [("elf", "sm_87")]


def test_every_kernel_runs_on_the_gpu():
    model = models.build(MODEL)
    lowered = codegen.lower(model, targets.get("jetson-orin"), _shapes(model))
    kernels = [gv.name_hint for gv, f in lowered.functions.items()
               if type(f).__name__ == "PrimFunc"]
    assert any("conv2d" in k for k in kernels)
    assert checks.host_kernels(lowered) == []


def test_a_build_without_gpu_schedules_is_refused_by_name(monkeypatch):
    target = target_without_phases("jetson-orin", ("schedule",), monkeypatch)
    model = models.build(MODEL)
    with pytest.raises(EdgecError, match=r"no GPU schedule and would run on the host CPU: "
                                         r".*fused_conv2d"):
        codegen.build(model, target, _shapes(model))


def test_fp16_kernels_compute_in_half(jetson_library):
    fp32_source = nvcc.SOURCES[-1]  # the jetson build's
    model = models.build(MODEL)
    lowering = pipelines.Lowering(precision="fp16")
    codegen.build(model, targets.get("jetson-orin"), _shapes(model), lowering)
    fp16_source = nvcc.SOURCES[-1]
    kernel_args = re.compile(r"__global__ void[^{]*\bhalf\* __restrict__")
    assert kernel_args.search(fp16_source) and not kernel_args.search(fp32_source)
    assert re.search(r"\bhalf\b[^;]*\*", fp16_source)  # half products in the kernels' bodies


def test_fp16_is_refused_where_the_pipeline_has_no_fp16():
    model = models.build(MODEL)
    with pytest.raises(EdgecError, match="builds fp32, not fp16"):
        codegen.build(model, targets.get("host"), _shapes(model),
                      pipelines.Lowering(precision="fp16"))


def test_source_or_missing_machine_code_is_refused(tmp_path, jetson_library):
    source = tmp_path / "source.so"
    source.write_bytes(b'\x7fELF...extern "C" __global__ void __launch_bounds__(64) k()')
    with pytest.raises(EdgecError, match="holds CUDA C source"):
        checks.check_library(source, "sm_87")
    with pytest.raises(EdgecError, match=r"no sm_90 machine code \(elf sm_87\)"):
        checks.check_library(jetson_library, "sm_90")


@pytest.mark.skipif(targets.device_present("cuda"), reason="this machine has a CUDA GPU")
def test_loading_without_a_gpu_fails_in_one_line(cuda_artifact):
    done = subprocess.run([sys.executable, "-m", "edgec", "run", str(cuda_artifact)],
                          capture_output=True, text=True)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        "edgec: error: artifact runs on cuda, and this machine has no cuda device TVM can open"]


@pytest.mark.skipif(not targets.device_present("cuda"), reason="no CUDA GPU here")
def test_cuda_artifact_agrees_with_onnxruntime_on_the_gpu(cuda_artifact):
    manifest = json.loads((cuda_artifact / "manifest.json").read_text())
    assert manifest["validation"]["ok"]


@pytest.mark.slow  # fetches the aarch64 wheels once, cross-builds the runner
def test_jetson_bundle_holds_the_cuda_runtime_and_fails_plainly_without_cuda(onnx_path, tmp_path):
    import shutil

    import edgec

    out = tmp_path / "bundle"
    edgec.compile(onnx_path, output=out, target="jetson-orin", bundle=True)
    for name in ("edgec-run", "lib/libtvm_runtime_cuda.so", "lib/libtvm_runtime.so"):
        assert _machine(out / name) == EM_AARCH64
    assert (out / "run.sh").stat().st_mode & 0o111
    assert "CUDA 13\nruntime (libcudart.so.13)" in (out / "README.txt").read_text()
    if shutil.which("qemu-aarch64") is None:
        pytest.skip("no qemu-aarch64 to start the runner")
    done = subprocess.run(["qemu-aarch64", "-L", "/usr/aarch64-linux-gnu", str(out / "edgec-run"),
                           "--bundle", str(out)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        "edgec-run: error: cannot load TVM's CUDA runtime: libcudart.so.13: cannot open shared "
        "object file: No such file or directory"]


def test_fp16_a_model_tvm_cannot_convert_is_refused_in_one_line(tmp_path):
    import edgec

    path = models.export("gem_head", tmp_path / "gem_head.onnx")  # GeM pooling: pow, clip
    for _ in range(2):  # the error type survives TVM's pass boundary every time
        with pytest.raises(EdgecError, match=r"^--precision fp16: TVM's ToMixedPrecision cannot "
                                             r"convert this model \(.*\); build it in fp32$"):
            edgec.compile(path, output=tmp_path / "out", target="cuda", precision="fp16")
        assert not (tmp_path / "out").exists()
