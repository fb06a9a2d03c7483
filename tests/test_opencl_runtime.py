"""edgec's OpenCL runtime (runtime/opencl.py, runtime/device/opencl*): real OpenCL kernels on
this machine's platform (PoCL, OpenCL on the CPU, which ./dev installs).

Tiny ONNX graphs are imported into Relax, scheduled with dlight's GPU rules, compiled by TVM
for OpenCL, exported, loaded back through our "ffi.Module.load_from_bytes.opencl" and run on
tvm.opencl(0) through our "device_api.opencl"; outputs are held to onnxruntime's.
"""

from __future__ import annotations

import ctypes
import os
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from edgec.errors import EdgecError
from edgec.runtime import opencl

RTOL = 1e-4
ATOL = 1e-5  # times max(1, max|reference|)
HANDLE = bytes([3, 64, 1, 0])  # DLDataType of a buffer argument: opaque handle, 64 bits


@pytest.fixture(scope="module")
def tvm():
    """TVM with edgec's OpenCL runtime loaded; the module skips where no platform exists."""
    try:
        opencl.ensure_loaded()
    except EdgecError as err:
        if str(err).startswith("no OpenCL"):
            pytest.skip(f"no OpenCL platform here ({err})")
        raise
    import tvm

    return tvm


def _model(nodes, inputs, outputs, weights) -> onnx.ModelProto:
    graph = helper.make_graph(nodes, "g", inputs, outputs,
                              [numpy_helper.from_array(w, name) for name, w in weights.items()])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])


def _value(name: str, shape: list[int]) -> onnx.ValueInfoProto:
    return helper.make_tensor_value_info(name, TensorProto.FLOAT, shape)


def conv_relu() -> onnx.ModelProto:
    rng = np.random.default_rng(0)
    weights = {"w": rng.standard_normal((8, 3, 3, 3)).astype("float32"),
               "b": rng.standard_normal(8).astype("float32")}
    nodes = [helper.make_node("Conv", ["x", "w", "b"], ["c"], pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c"], ["y"])]
    return _model(nodes, [_value("x", [1, 3, 16, 16])], [_value("y", [1, 8, 16, 16])], weights)


def classifier() -> onnx.ModelProto:
    """Conv + ReLU, global average pool, Gemm, Softmax: several kernels of different kinds."""
    rng = np.random.default_rng(1)
    weights = {"w": rng.standard_normal((8, 3, 3, 3)).astype("float32"),
               "b": rng.standard_normal(8).astype("float32"),
               "fc": rng.standard_normal((10, 8)).astype("float32"),
               "fcb": rng.standard_normal(10).astype("float32")}
    nodes = [helper.make_node("Conv", ["x", "w", "b"], ["c"], pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c"], ["r"]),
             helper.make_node("GlobalAveragePool", ["r"], ["p"]),
             helper.make_node("Flatten", ["p"], ["f"]),
             helper.make_node("Gemm", ["f", "fc", "fcb"], ["g"], transB=1),
             helper.make_node("Softmax", ["g"], ["y"], axis=1)]
    return _model(nodes, [_value("x", [1, 3, 12, 12])], [_value("y", [1, 10])], weights)


def _compile(tvm, model: onnx.ModelProto):
    """Import, fuse, schedule with dlight's GPU rules and compile for OpenCL."""
    from tvm import relax
    from tvm.relax.frontend.onnx import from_onnx
    from tvm.s_tir import dlight as dl

    mod = from_onnx(model, keep_params_in_input=False)
    target = tvm.target.Target({"kind": "opencl", "host": {"kind": "llvm"}})
    with target:
        for fuse in (relax.transform.LegalizeOps(), relax.transform.AnnotateTIROpPattern(),
                     relax.transform.FoldConstant(), relax.transform.FuseOps(),
                     relax.transform.FuseTIR()):
            mod = fuse(mod)
        mod = dl.ApplyDefaultSchedule(dl.gpu.Matmul(), dl.gpu.GEMV(), dl.gpu.Reduction(),
                                      dl.gpu.GeneralReduction(), dl.gpu.Fallback())(mod)
    return tvm.compile(mod, target=target)


def _export(tvm, model: onnx.ModelProto, path: Path) -> Path:
    _compile(tvm, model).export_library(str(path))
    return path


@pytest.fixture(scope="module")
def artifacts(tvm, tmp_path_factory) -> dict[str, tuple[onnx.ModelProto, Path]]:
    folder = tmp_path_factory.mktemp("opencl")
    return {name: (make(), _export(tvm, make(), folder / f"{name}.so"))
            for name, make in (("conv_relu", conv_relu), ("classifier", classifier))}


def _reference(model: onnx.ModelProto, x: np.ndarray) -> np.ndarray:
    import onnxruntime as ort

    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, {"x": x})[0]


def _check(got: np.ndarray, ref: np.ndarray) -> None:
    np.testing.assert_allclose(got, ref, rtol=RTOL, atol=ATOL * max(1.0, float(np.abs(ref).max())))


def _run(tvm, lib, x: np.ndarray, vm=None) -> np.ndarray:
    from tvm import relax

    vm = vm or relax.VirtualMachine(lib, tvm.opencl(0))
    return vm["main"](tvm.runtime.tensor(x, tvm.opencl(0))).numpy()


def _opencl_module(lib):
    """The OpenCL kernel module inside a loaded artifact (VM executable -> library -> opencl)."""
    found = [m for m in lib.imports[0].imports if m.kind == "opencl"]
    assert len(found) == 1, [m.kind for m in lib.imports[0].imports]
    return found[0]


def _input(shape: tuple[int, ...], seed: int) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal(shape).astype("float32")


def test_device_is_open_with_its_attributes(tvm):
    dev = tvm.opencl(0)
    assert dev.exist
    assert dev.max_threads_per_block >= 1
    assert dev.max_shared_memory_per_block > 0
    assert dev.device_name and dev.device_name in opencl.describe()
    assert not tvm.opencl(99).exist


def test_conv_relu_matches_onnxruntime(tvm, artifacts):
    model, path = artifacts["conv_relu"]
    lib = tvm.runtime.load_module(str(path))
    assert "__kernel" in _opencl_module(lib).inspect_source()
    x = _input((1, 3, 16, 16), 0)
    _check(_run(tvm, lib, x), _reference(model, x))


def test_several_kernels_match_onnxruntime(tvm, artifacts):
    model, path = artifacts["classifier"]
    lib = tvm.runtime.load_module(str(path))
    assert _opencl_module(lib).inspect_source().count("__kernel void") >= 6  # declared + defined
    x = _input((1, 3, 12, 12), 1)
    got = _run(tvm, lib, x)
    _check(got, _reference(model, x))
    assert abs(float(got.sum()) - 1.0) < 1e-5


def test_one_artifact_called_many_times(tvm, artifacts):
    """The VM reuses its buffers and our kernels across calls: each call's result must be
    its own input's."""
    from tvm import relax

    model, path = artifacts["classifier"]
    lib = tvm.runtime.load_module(str(path))
    vm = relax.VirtualMachine(lib, tvm.opencl(0))
    results = []
    for seed in range(4):
        x = _input((1, 3, 12, 12), 10 + seed)
        results.append(_run(tvm, lib, x, vm))
        _check(results[-1], _reference(model, x))
    assert all(not np.allclose(a, b) for a, b in zip(results, results[1:]))
    x = _input((1, 3, 12, 12), 10)  # a second VM on the same library, the first input again
    _check(_run(tvm, lib, x), results[0])


def _embedded_opencl(library: Path) -> bytes:
    """The OpenCL module's bytes in an exported library's module blob (kind "opencl", then a
    u64 length and the bytes)."""
    data = library.read_bytes()
    kind = struct.pack("<Q", 6) + b"opencl"
    assert data.count(kind) == 1
    start = data.index(kind) + len(kind)
    (size,) = struct.unpack_from("<Q", data, start)
    return data[start + 8:start + 8 + size]


def test_export_round_trip(tvm, artifacts, tmp_path):
    """SaveToBytes writes what the loader reads: an executable whose OpenCL module is ours
    (loaded from an export) exports the same bytes, and that export runs."""
    model, path = artifacts["conv_relu"]
    ours = _opencl_module(tvm.runtime.load_module(str(path)))
    executable = _compile(tvm, model)
    host = executable.mod.imports[0]  # VM executable -> host code -> codegen's OpenCL module
    assert [m.kind for m in host.imports] == ["opencl"]
    host.clear_imports()
    host.import_module(ours)
    again = tmp_path / "again.so"
    executable.export_library(str(again))
    assert _embedded_opencl(again) == _embedded_opencl(path)
    x = _input((1, 3, 16, 16), 3)
    _check(_run(tvm, tvm.runtime.load_module(str(again)), x), _reference(model, x))


def test_copies_with_byte_offsets(tvm):
    dev = tvm.opencl(0)
    data = np.arange(64, dtype="float32")
    whole = tvm.runtime.tensor(data, dev)
    np.testing.assert_array_equal(whole.numpy(), data)
    view = whole._create_view((16,), relative_byte_offset=32 * 4)  # elements 32..47
    np.testing.assert_array_equal(view.numpy(), data[32:48])
    view.copyfrom(np.full(16, -1.0, dtype="float32"))  # host -> device at an offset
    expected = data.copy()
    expected[32:48] = -1.0
    np.testing.assert_array_equal(whole.numpy(), expected)
    other = tvm.runtime.empty((16,), "float32", dev)
    whole._create_view((16,), relative_byte_offset=8 * 4).copyto(other)  # device -> device
    np.testing.assert_array_equal(other.numpy(), data[8:24])
    empty = tvm.runtime.empty((0,), "float32", dev)
    assert empty.numpy().shape == (0,)


def _module_bytes(source: str, extra_tag: int = 0) -> bytes:
    """An OpenCL module's bytes as TVM's codegen writes them: kernel "k" with one buffer
    argument and one launch parameter (threadIdx.x)."""
    def text(s: str) -> bytes:
        return struct.pack("<Q", len(s)) + s.encode()
    info = (text("k") + struct.pack("<Q", 1) + HANDLE + struct.pack("<Q", 1) + text("threadIdx.x")
            + struct.pack("<Qi", 1, extra_tag))
    return text("cl") + struct.pack("<Q", 1) + text("k") + info + text(source)


def _handle(tensor) -> ctypes.c_void_p:
    """A tensor's device pointer (its cl_mem), as TVM's host code passes it to a kernel."""
    return ctypes.c_void_p(tensor.data_ptr())


def test_hand_made_module_runs_and_serializes(tvm):
    load = tvm.get_global_func("ffi.Module.load_from_bytes.opencl")
    source = "__kernel void k(__global float* a) { a[get_global_id(0)] *= 2.0f; }"
    mod = load(_module_bytes(source))
    assert mod.inspect_source() == source
    x = tvm.runtime.tensor(np.arange(8, dtype="float32"), tvm.opencl(0))
    mod.get_function("k")(_handle(x), 8)
    np.testing.assert_array_equal(x.numpy(), np.arange(8, dtype="float32") * 2)


def test_kernel_that_fails_to_build_says_why(tvm):
    load = tvm.get_global_func("ffi.Module.load_from_bytes.opencl")
    mod = load(_module_bytes("__kernel void k(__global float* a) { a[0] = undeclared_name; }"))
    x = tvm.runtime.empty((8,), "float32", tvm.opencl(0))
    with pytest.raises(Exception, match="building the kernels .* failed") as err:
        mod.get_function("k")(_handle(x), 8)
    assert "CL_BUILD_PROGRAM_FAILURE" in str(err.value)
    assert "undeclared_name" in str(err.value)  # the compiler's log comes with it


def test_textures_and_bad_bytes_are_refused(tvm):
    load = tvm.get_global_func("ffi.Module.load_from_bytes.opencl")
    mod = load(_module_bytes("__kernel void k(__global float* a) {}", extra_tag=1))
    with pytest.raises(Exception, match="texture"):
        mod.get_function("k")
    with pytest.raises(Exception, match="truncated"):
        load(_module_bytes("__kernel void k() {}")[:-3])


def test_platform_choice_by_environment(tvm, tmp_path):
    """EDGEC_OPENCL_PLATFORM picks a platform by name; one that matches none is an error, and
    so is a machine without platforms (here: an ICD loader pointed at an empty folder)."""
    code = ("from edgec.runtime import opencl\n"
            "try:\n    opencl.ensure_loaded(); print('ok', opencl.describe())\n"
            "except Exception as e:\n    print('error', e)\n")
    name = opencl.describe().split(" | ")[0]
    cases = [({"EDGEC_OPENCL_PLATFORM": name[:8]}, f"ok {name}"),
             ({"EDGEC_OPENCL_PLATFORM": "no-such-platform"},
              "error no OpenCL platform matches EDGEC_OPENCL_PLATFORM=no-such-platform"),
             ({"OCL_ICD_VENDORS": str(tmp_path)},
              "error no OpenCL platform: install pocl-opencl-icd (CPU) or the GPU vendor's ICD")]
    for env, expect in cases:
        done = subprocess.run([sys.executable, "-c", code], env={**os.environ, **env},
                              capture_output=True, text=True, timeout=120)
        assert done.stdout.startswith(expect), (env, done.stdout + done.stderr)


def _dynamic(path: Path) -> tuple[str, list[str]]:
    """(machine, NEEDED libraries) of an ELF file, from readelf."""
    header = subprocess.run(["readelf", "-h", str(path)], capture_output=True, text=True).stdout
    machine = next(ln.split(":", 1)[1].strip() for ln in header.splitlines() if "Machine:" in ln)
    dynamic = subprocess.run(["readelf", "-d", str(path)], capture_output=True, text=True).stdout
    return machine, [ln.split("[")[1].rstrip("]") for ln in dynamic.splitlines() if "NEEDED" in ln]


SYSTEM_LIBS = {"libc.so.6", "libstdc++.so.6", "libm.so.6", "libgcc_s.so.1", "libdl.so.2",
               "libpthread.so.0", "ld-linux-x86-64.so.2", "ld-linux-aarch64.so.1"}


@pytest.mark.parametrize("target", ["host", "mali"])
def test_library_links_no_opencl(target):
    """The library opens the OpenCL driver at run time: it links TVM's runtime and the system
    libraries only, for this machine and for aarch64 boards (mali)."""
    from edgec import targets

    built_for = targets.get(target)
    machine = {"x86_64": "X86-64", "aarch64": "AArch64"}[built_for.arch]
    got_machine, needed = _dynamic(opencl.library(built_for))
    assert got_machine.endswith(machine), got_machine  # "Advanced Micro Devices X86-64"
    assert {"libtvm_runtime.so", "libtvm_ffi.so"} <= set(needed)
    assert set(needed) - {"libtvm_runtime.so", "libtvm_ffi.so"} <= SYSTEM_LIBS, needed
