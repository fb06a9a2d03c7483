"""tir_level/fast_tanh.py: float32 tanh on LLVM targets as one rational function. Checked
against numpy's tanh in float64 (within 8 ulp and 4e-7 absolute, odd, the clamp's value outside
it), a conv + Tanh model against onnxruntime with no libm call and no exp polynomial left, and
the aarch64 build of the kernel on NEON vectors."""

from __future__ import annotations

import shutil
import subprocess

import numpy as np
import pytest
from onnx import helper

from edgec.compiler.codegen.tir_level import fast_tanh
from edgec.compiler.codegen.tir_level.stack_scratch import pipeline

from conftest import host_disassembly, random_const, tiny_model

N = 1 << 16


def _kernel(target: dict):
    """A vectorized (16 lanes) elementwise tanh over N floats, built with edgec's TIR pipeline."""
    import tvm
    from tvm import te

    a = te.placeholder((N,), name="A")
    b = te.compute((N,), lambda i: te.tanh(a[i]), name="B")
    sch = tvm.s_tir.Schedule(te.create_prim_func([a, b]))
    (loop,) = sch.get_loops(sch.get_sblock("B"))
    sch.vectorize(sch.split(loop, [None, 16])[1])
    return tvm.compile(sch.mod, target=tvm.target.Target(target), tir_pipeline=pipeline())


def _tanh(x: np.ndarray) -> np.ndarray:
    import tvm

    out = tvm.runtime.tensor(np.zeros(N, np.float32))
    _kernel({"kind": "llvm"})(tvm.runtime.tensor(x), out)
    return out.numpy()


def test_tanh_is_within_8_ulp_odd_and_clamped():
    tiny = np.logspace(-30, 1, N // 4).astype(np.float32)
    x = np.concatenate([np.linspace(-20, 20, N // 2).astype(np.float32), tiny, -tiny])
    got = _tanh(x)
    want = np.tanh(x.astype(np.float64))
    ulp = np.abs(got - want) / np.spacing(np.abs(want).astype(np.float32))
    assert ulp.max() <= 8.0, ulp.max()
    assert np.abs(got - want).max() <= 4e-7
    assert np.array_equal(got[N // 2:N // 2 + N // 4], -got[N // 2 + N // 4:])  # odd
    outside = np.abs(x) > fast_tanh.CLAMP
    assert np.allclose(np.abs(got[outside]), 1.0, atol=3e-7)
    assert (np.abs(got) <= 1.0).all()


def test_a_tanh_conv_matches_onnxruntime_without_exp(tmp_path):
    # a LeNet-style first layer: 1 -> 6 channels, 5x5, Tanh
    rng = np.random.default_rng(0)
    model = tiny_model([helper.make_node("Conv", ["x", "w", "b"], ["c"]),
                        helper.make_node("Tanh", ["c"], ["y"])],
                       [1, 1, 32, 32], [random_const("w", (6, 1, 5, 5), rng),
                                        random_const("b", (6,), rng)])
    # matches onnxruntime within 1e-4 x max|ref| over several calls, then the library
    asm = host_disassembly(model, tmp_path)
    assert "tanhf" not in asm and "expf" not in asm
    assert "roundps" not in asm and "roundss" not in asm  # no exp range reduction (its floor)


@pytest.mark.skipif(shutil.which("aarch64-linux-gnu-objdump") is None,
                    reason="binutils-aarch64-linux-gnu is needed")
def test_the_aarch64_kernel_is_neon_without_libm(tmp_path):
    lib = _kernel({"kind": "llvm", "mtriple": "aarch64-linux-gnu", "mattr": ["+neon"]})
    lib.export_library(str(tmp_path / "k.so"), fcompile=__import__(
        "tvm.support.cc", fromlist=["cross_compiler"]).cross_compiler("aarch64-linux-gnu-g++"))
    asm = subprocess.run(["aarch64-linux-gnu-objdump", "-d", str(tmp_path / "k.so")],
                         capture_output=True, text=True, check=True).stdout
    assert "tanhf" not in asm and "expf" not in asm
    assert "fdiv\tv" in asm and "fmla" in asm  # one vector division, NEON multiply-adds
    assert "frintm" not in asm  # no exp range reduction
