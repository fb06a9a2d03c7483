"""OpenCL builds (targets `opencl`, `mali`, `adreno`; the `opencl` pipeline), checked without
running: every kernel is on the GPU and defined in the library's OpenCL C, a build without GPU
schedules is refused by name, the phones' host code is aarch64, and each kernel names the
dlight rule that scheduled it. Running on PoCL is tests/test_opencl_models.py."""

from __future__ import annotations

from pathlib import Path

import pytest

from edgec import models, targets
from edgec.compiler import codegen
from edgec.compiler.codegen import pipelines
from edgec.compiler.codegen.gpu import checks
from edgec.errors import EdgecError

from conftest import target_without_phases

MODEL = "digits_resnet"  # convs, residual adds, global pooling, a dense layer
EM_AARCH64 = 183
EM_X86_64 = 62


def _shapes(model) -> dict[str, list[int]]:
    return {i.name: [d.dim_value for d in i.type.tensor_type.shape.dim] for i in model.graph.input}


def _machine(path: Path) -> int:
    data = path.read_bytes()
    assert data[:4] == b"\x7fELF"
    return int.from_bytes(data[18:20], "little")


@pytest.fixture(scope="module")
def libraries(tmp_path_factory) -> dict[str, Path]:
    """MODEL built and exported for each OpenCL target."""
    model = models.build(MODEL)
    out = {}
    for name in ("opencl", "mali", "adreno"):
        target = targets.get(name)
        executable = codegen.build(model, target, _shapes(model))
        out[name] = codegen.export(executable, tmp_path_factory.mktemp(name) / "model.so", target)
    return out


def test_targets_are_opencl_with_the_opencl_pipeline():
    for name, device, arch in (("opencl", None, targets.host_arch()), ("mali", "mali", "aarch64"),
                               ("adreno", "adreno", "aarch64")):
        target = targets.get(name)
        assert (target.device, target.pipeline, target.arch) == ("opencl", "opencl", arch)
        tvm_target = target.tvm_target()
        assert tvm_target.kind.name == "opencl"
        assert tvm_target.attrs.get("device") == device
        assert str(tvm_target.host.attrs["mtriple"]) == f"{arch}-linux-gnu"


def test_every_kernel_is_opencl_c_in_the_library(libraries):
    model = models.build(MODEL)
    lowered = codegen.lower(model, targets.get("opencl"), _shapes(model))
    assert checks.host_kernels(lowered) == []
    device_kernels = {gv.name_hint for gv, f in lowered.functions.items()
                      if type(f).__name__ == "PrimFunc"}
    for path in libraries.values():
        kernels, source = checks.opencl_module(path.read_bytes())
        # each PrimFunc becomes one or more __kernel functions named after it
        assert {name.rsplit("_kernel", 1)[0] for name in kernels} == device_kernels
        assert checks.check_opencl_library(path) == kernels
        assert all(tag.startswith(("blockIdx.", "threadIdx.")) for t in kernels.values()
                   for tag in t)
        assert source.count("// Function: ") == len(kernels)  # one section per kernel


def test_phones_host_code_is_aarch64(libraries):
    assert _machine(libraries["opencl"]) == (EM_X86_64 if targets.host_arch() == "x86_64"
                                             else EM_AARCH64)
    assert _machine(libraries["mali"]) == EM_AARCH64
    assert _machine(libraries["adreno"]) == EM_AARCH64


def test_each_kernel_names_the_rule_that_scheduled_it():
    model = models.build(MODEL)
    lowering = codegen.Lowering()
    codegen.lower(model, targets.get("adreno"), _shapes(model), lowering)
    assert lowering.kernels and "unscheduled" not in lowering.kernels.values()
    convs = {k: v for k, v in lowering.kernels.items() if "conv2d" in k}
    assert convs and set(convs.values()) == {"gpu.Matmul"}  # implicit GEMM
    assert lowering.kernels.keys() - convs.keys()  # pooling, dense, adds: other rules


def test_a_build_without_gpu_schedules_is_refused_by_name(monkeypatch):
    target = target_without_phases("mali", ("schedule",), monkeypatch)
    model = models.build(MODEL)
    with pytest.raises(EdgecError, match=r"no GPU schedule and would run on the host CPU: "
                                         r"conv2d, conv2d1"):
        codegen.build(model, target, _shapes(model))


def test_a_library_without_kernel_source_is_refused(tmp_path, libraries):
    data = libraries["mali"].read_bytes()
    kernels, source = checks.opencl_module(data)
    first = next(iter(kernels))
    broken = tmp_path / "broken.so"
    broken.write_bytes(data.replace(f"__kernel void {first}(".encode(),
                                    f"__kernel void {first[:-1]}X(".encode()))
    with pytest.raises(EdgecError, match=f"OpenCL kernels without source: {first}"):
        checks.check_opencl_library(broken)
    plain = tmp_path / "plain.so"
    plain.write_bytes(b"\x7fELF no device module here")
    with pytest.raises(EdgecError, match="holds no readable OpenCL module"):
        checks.check_opencl_library(plain)


def test_fp16_is_refused_for_opencl():
    model = models.build(MODEL)
    with pytest.raises(EdgecError, match="builds fp32, not fp16"):
        codegen.build(model, targets.get("mali"), _shapes(model),
                      pipelines.Lowering(precision="fp16"))
