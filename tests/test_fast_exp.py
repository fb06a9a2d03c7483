"""tir_level/fast_exp.py: float32 exp on LLVM targets as vector arithmetic. Checked against
numpy's exp in float64 (within 2 ulp over the clamped range, the clamp's values outside it),
sigmoid and SiLU through it, no call to libm's expf left in a compiled SiLU model, and the
aarch64 build of the same kernel vectorized too (no expf call, NEON multiply-adds)."""

from __future__ import annotations

import shutil
import subprocess

import numpy as np
import pytest
from onnx import helper

from edgec.compiler.codegen.tir_level import fast_exp
from edgec.compiler.codegen.tir_level.stack_scratch import pipeline

from conftest import host_disassembly, random_const, tiny_model

N = 1 << 16


def _kernel(target: dict, op: str):
    """A vectorized (16 lanes) elementwise exp or sigmoid over N floats, built with edgec's TIR
    pipeline for `target`."""
    import tvm
    from tvm import te

    a = te.placeholder((N,), name="A")
    fn = te.exp if op == "exp" else te.sigmoid
    b = te.compute((N,), lambda i: fn(a[i]), name="B")
    sch = tvm.s_tir.Schedule(te.create_prim_func([a, b]))
    (loop,) = sch.get_loops(sch.get_sblock("B"))
    sch.vectorize(sch.split(loop, [None, 16])[1])
    return tvm.compile(sch.mod, target=tvm.target.Target(target), tir_pipeline=pipeline())


def _run(op: str, x: np.ndarray) -> np.ndarray:
    import tvm

    out = tvm.runtime.tensor(np.zeros(N, np.float32))
    _kernel({"kind": "llvm"}, op)(tvm.runtime.tensor(x), out)
    return out.numpy()


def test_exp_is_within_two_ulp_and_clamped_outside_its_range():
    rng = np.random.default_rng(0)
    x = np.concatenate([np.linspace(-120, 120, N // 2),
                        rng.standard_normal(N // 2) * 5]).astype(np.float32)
    got = _run("exp", x)
    want = np.exp(x.astype(np.float64))
    inside = (x >= fast_exp.LO) & (x <= fast_exp.HI)
    ulp = np.abs(got[inside] - want[inside]) / np.spacing(want[inside].astype(np.float32))
    assert ulp.max() <= 2.0, ulp.max()
    assert np.isfinite(got).all() and (got > 0).all()
    assert np.allclose(got[x > fast_exp.HI], np.float32(np.exp(fast_exp.HI)), rtol=1e-6)
    assert (got[x < fast_exp.LO] < 1.2e-38).all()


def test_sigmoid_goes_through_it_within_float_rounding():
    x = np.linspace(-30, 30, N).astype(np.float32)
    got = _run("sigmoid", x)
    want = 1 / (1 + np.exp(-x.astype(np.float64)))
    assert np.abs(got - want).max() <= 2e-7


def test_a_silu_model_has_no_libm_exp_call(tmp_path):
    # conv + SiLU (x * sigmoid(x)), as an EfficientNet/YOLO export writes it
    rng = np.random.default_rng(0)
    model = tiny_model([helper.make_node("Conv", ["x", "w"], ["c"], pads=[1] * 4),
                        helper.make_node("Sigmoid", ["c"], ["s"]),
                        helper.make_node("Mul", ["c", "s"], ["y"])],
                       [1, 16, 24, 24], [random_const("w", (32, 16, 3, 3), rng)])
    # matches onnxruntime within 1e-4 x max|ref| over several calls, then the library
    asm = host_disassembly(model, tmp_path)
    assert "expf" not in asm


@pytest.mark.skipif(shutil.which("aarch64-linux-gnu-objdump") is None,
                    reason="binutils-aarch64-linux-gnu is needed")
def test_the_aarch64_kernel_is_neon_without_expf(tmp_path):
    lib = _kernel({"kind": "llvm", "mtriple": "aarch64-linux-gnu", "mattr": ["+neon"]}, "exp")
    lib.export_library(str(tmp_path / "k.so"), fcompile=__import__(
        "tvm.support.cc", fromlist=["cross_compiler"]).cross_compiler("aarch64-linux-gnu-g++"))
    asm = subprocess.run(["aarch64-linux-gnu-objdump", "-d", str(tmp_path / "k.so")],
                         capture_output=True, text=True, check=True).stdout
    assert "expf" not in asm
    assert "frintm" in asm and "fmla" in asm  # floor and multiply-adds on NEON vectors
