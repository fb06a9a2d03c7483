"""tir_level/stack_scratch.py: a register tile's scratch over TVM's 1 KiB stack limit stays a stack
alloca.

The kernel: a 1x1 conv (a GEMM over 49 pixels) with a bias epilogue, scheduled by the
reduction rule with a fixed tile of 16-lane vectors: 7 x 4 (28 accumulators, 1.75 KiB of
scratch) or 7 x 2 (896 bytes, under TVM's limit).
"""

from __future__ import annotations

import numpy as np
import pytest

from edgec.compiler.codegen.cpu.tiles import CpuShape, Knobs
from edgec.compiler.codegen.tir_level import stack_scratch

AVX512 = CpuShape(lanes=16, registers=24, pointwise=True)
RNG = np.random.default_rng(0)


def _kernel(tile: tuple[int, int]) -> tuple:
    """(scheduled module, inputs, expected output) of y = x @ w + b over 49 x 64 -> 64."""
    import tvm
    from tvm import te

    from edgec.compiler.codegen.cpu.schedules import reduction_tile

    x = te.placeholder((1, 7, 7, 64), name="x")
    w = te.placeholder((64, 64), name="w")
    b = te.placeholder((64,), name="b")
    k = te.reduce_axis((0, 64), name="k")
    conv = te.compute((1, 7, 7, 64), lambda n, h, i, c: te.sum(x[n, h, i, k] * w[k, c], axis=k),
                      name="conv")
    y = te.compute(conv.shape, lambda n, h, i, c: conv[n, h, i, c] + b[c], name="y")
    func = te.create_prim_func([x, w, b, y]).with_attr("global_symbol", "main")
    sch = reduction_tile(func, AVX512, Knobs(tile=tile, walk="rows"))
    assert sch is not None
    args = [RNG.standard_normal(s).astype("float32") for s in ((1, 7, 7, 64), (64, 64), (64,))]
    want = np.einsum("nhik,kc->nhic", args[0], args[1]) + args[2]
    return tvm.IRModule({"main": sch.mod["main"]}), args, want


def _build(mod, pipeline: str | None):
    import tvm

    # pipeline None: TVM's default for the target
    return tvm.tirx.build(mod, target=tvm.target.Target({"kind": "llvm"}), pipeline=pipeline)


def _run(lib, args: list[np.ndarray]) -> np.ndarray:
    import tvm

    dev = tvm.cpu()
    out = tvm.runtime.tensor(np.zeros((1, 7, 7, 64), "float32"), dev)
    lib["main"](*[tvm.runtime.tensor(a, dev) for a in args], out)
    return out.numpy()


def _workspaces(lib) -> int:
    return lib.inspect_source("asm").count("TVMBackendAllocWorkspace")


def test_scratch_over_1kib_stays_on_the_stack():
    mod, args, want = _kernel((7, 4))  # 7 x 4 x 16 floats: 1792 bytes
    default, ours = _build(mod, None), _build(mod, stack_scratch.pipeline())
    assert _workspaces(default) > 0  # TVM alone: a heap workspace per tile
    assert _workspaces(ours) == 0
    for lib in (default, ours):
        np.testing.assert_allclose(_run(lib, args), want, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("tile", [(7, 2), (7, 4)])
def test_pass_is_idempotent_and_leaves_other_targets(tile):
    import tvm

    mod, _, _ = _kernel(tile)
    target = tvm.target.Target({"kind": "llvm"})
    lowered = tvm.s_tir.pipeline.default_s_tir_pipeline()[0](
        tvm.tirx.transform.BindTarget(target.with_host(target))(mod))
    func = lowered["main"]
    once = stack_scratch.stack_scratch(func)
    assert stack_scratch.stack_scratch(once).same_as(once)  # twice: nothing more to do
    # under 1 KiB (7 x 2) or over: every small allocation in a parallel loop is marked
    text = once.script()
    assert stack_scratch.ANNOTATION in text
    assert stack_scratch.ANNOTATION not in func.script()
    cuda = func.with_attr("target", tvm.target.Target({"kind": "cuda"}))
    assert stack_scratch.stack_scratch(cuda).same_as(cuda)


def test_large_buffers_keep_tvm_workspaces(monkeypatch):
    """Over STACK_BYTES the allocation is TVM's to place, as before."""
    monkeypatch.setattr(stack_scratch, "STACK_BYTES", 1024)
    mod, args, want = _kernel((7, 4))
    lib = _build(mod, stack_scratch.pipeline())
    assert _workspaces(lib) > 0
    np.testing.assert_allclose(_run(lib, args), want, rtol=1e-4, atol=1e-4)
