"""Int8 on x86 without VNNI (an AVX2 CPU model: haswell): int8 convs and the Gemm take the
int32-lane path, which LLVM builds on `vpmaddwd` (pairs of int16 products summed into int32
lanes, exact) with no `vpdpbusd`; the build matches onnxruntime on the same QDQ model within
one step of the output quantize (tolerance as in test_int8_codegen)."""

from __future__ import annotations

from pathlib import Path

import onnx
import pytest
from test_int8_codegen import X_SHAPE, _disassembly, _output_step, _run_calls, quantize, small_cnn

from edgec import targets
from edgec.compiler import codegen
from edgec.compiler.codegen.cpu.tiles import cpu_shape

HASWELL = """description = "x86-64 with AVX2, no AVX-512 or VNNI"
arch = "x86_64"
threads = 0
[tvm]
kind = "llvm"
mtriple = "x86_64-linux-gnu"
mcpu = "haswell"
[toolchain]
cc = "g++"
[deploy]
wheel_platform = "installed"
"""


def _has_avx2() -> bool:
    return "avx2" in Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() \
        else False


@pytest.fixture(scope="module")
def haswell(tmp_path_factory):
    folder = tmp_path_factory.mktemp("haswell")
    (folder / "haswell.toml").write_text(HASWELL)
    return targets.get(str(folder / "haswell.toml")), folder


def test_avx2_int8_builds_on_vpmaddwd_and_matches(haswell):
    target, folder = haswell
    shape = cpu_shape(target.tvm_target())
    assert shape.int8_activation == "uint8" and not shape.int8_dot
    qdq = quantize(small_cnn(), folder)
    lowering = codegen.Lowering()
    ex = codegen.build(onnx.load(qdq), target, {"x": X_SHAPE}, lowering)
    rules = list(lowering.kernels.values())
    assert rules.count("int8") == 5 and "unscheduled" not in rules  # 4 convs, the Gemm
    asm = _disassembly(ex, str(folder / "haswell.toml"), folder, "objdump")
    assert "vpmaddwd" in asm and "vpdpbusd" not in asm
    if _has_avx2():
        _run_calls(ex, qdq, X_SHAPE, tol=_output_step(qdq) * (1 + 1e-6))
