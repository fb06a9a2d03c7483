"""Register-tile scratch on the stack up to STACK_BYTES: a TIR pass and the build pipeline.

Pattern: an `AllocBuffer` of constant size under STACK_BYTES inside a parallel loop of a CPU
kernel (after the s_tir lowering passes: the buffer a conv's register tile sums into before
its fused epilogue, one per tile). Rewrite: the same allocation annotated
`disable_lower_builtin`, which LowerTVMBuiltin reads as "leave this a stack alloca".

Why: LowerTVMBuiltin keeps an allocation on the stack only under `kMaxStackAlloca` (1 KiB);
bigger ones become a TVMBackendAllocWorkspace call per tile, memory LLVM cannot promote to
registers, so every FMA then loads and stores its accumulator. 1 KiB is 16 AVX-512 vectors:
AVX-512 has 32 registers, and tiles of 16 to 24 accumulators (1-1.5 KiB) with their sums in
registers ran ResNet-18's 28x28 64 -> 128 stride-2 3x3 conv in 0.68-0.71 of the time of the
best tile under 1 KiB (7 x 2; Ice Lake, 2 threads, warm). A stack alloca is as safe as the
smaller ones TVM already makes: STACK_BYTES is a few KiB of each worker thread's stack.

Every build of edgec's kernels (compile, the tuner's builder, the in-model judge) goes
through `pipeline()`: the s_tir pipeline with this pass last, its finalize passes unchanged
(their intrinsic lowering takes fast_exp.py's and fast_tanh.py's rules for exp and tanh on LLVM
targets).
"""

from __future__ import annotations

from typing import Any

STACK_BYTES = 2048  # 32 AVX-512 vectors: any register tile
PIPELINE = "edgec"  # its name among TVM's TIR pipelines (tvm.tirx.get_tir_pipeline)
ANNOTATION = "disable_lower_builtin"


def _bytes(buffer: Any) -> int | None:
    from tvm import tirx

    size = buffer.dtype.bits * buffer.dtype.lanes // 8
    for dim in buffer.shape:
        if not isinstance(dim, tirx.IntImm):
            return None
        size *= int(dim)
    return size


def _rewrite(stmt: Any, parallel: bool) -> Any:
    """`stmt` with its small allocations under a parallel loop annotated; unchanged nodes are
    returned as they are, so a kernel without any is not rebuilt."""
    from tvm import tirx
    from tvm.tirx import stmt as s

    if isinstance(stmt, s.AllocBuffer):
        size = _bytes(stmt.buffer)
        if not parallel or size is None or size > STACK_BYTES or ANNOTATION in stmt.annotations:
            return stmt
        return s.AllocBuffer(stmt.buffer, {**stmt.annotations,
                                           ANNOTATION: tirx.IntImm("bool", 1)})
    if isinstance(stmt, s.SeqStmt):
        seq = [_rewrite(x, parallel) for x in stmt.seq]
        return stmt if all(a.same_as(b) for a, b in zip(seq, stmt.seq)) else s.SeqStmt(seq)
    if isinstance(stmt, s.For):
        body = _rewrite(stmt.body, parallel or stmt.kind == s.ForKind.PARALLEL)
        return stmt if body.same_as(stmt.body) else s.For(
            stmt.loop_var, stmt.min, stmt.extent, stmt.kind, body, stmt.thread_binding,
            stmt.annotations, stmt.step)
    if isinstance(stmt, s.AttrStmt):
        body = _rewrite(stmt.body, parallel)
        return stmt if body.same_as(stmt.body) else s.AttrStmt(
            stmt.node, stmt.attr_key, stmt.value, body)
    if isinstance(stmt, s.IfThenElse):
        then = _rewrite(stmt.then_case, parallel)
        other = None if stmt.else_case is None else _rewrite(stmt.else_case, parallel)
        same = then.same_as(stmt.then_case) and (other is None or other.same_as(stmt.else_case))
        return stmt if same else s.IfThenElse(stmt.condition, then, other)
    if isinstance(stmt, s.While):
        body = _rewrite(stmt.body, parallel)
        return stmt if body.same_as(stmt.body) else s.While(stmt.condition, body)
    return stmt


def stack_scratch(func: Any) -> Any:
    """`func` (a lowered PrimFunc) with its small per-tile scratch kept on the stack; kernels
    for other than an LLVM CPU target are returned unchanged."""
    target = func.attrs.get("target") if func.attrs else None
    if target is None or target.kind.name != "llvm":
        return func
    body = _rewrite(func.body, False)
    return func if body.same_as(func.body) else func.with_body(body)


def pipeline() -> str:
    """The name of the TIR pipeline edgec builds with, registered on first use."""
    import tvm
    from tvm.s_tir import pipeline as s_tir_pipeline
    from tvm.tirx import compilation_pipeline

    from . import fast_exp, fast_tanh

    fast_exp.register()  # float32 exp lowered to vector arithmetic on LLVM targets
    fast_tanh.register()  # float32 tanh as one rational function on LLVM targets
    if PIPELINE not in compilation_pipeline.PIPELINE_MAP:
        scratch = tvm.tirx.transform.prim_func_pass(
            lambda func, _mod, _ctx: stack_scratch(func), opt_level=0,
            name="EdgecStackScratch")

        def factory() -> tuple[Any, Any, Any]:
            main, host, device = s_tir_pipeline.default_s_tir_pipeline()
            return tvm.transform.Sequential([main, scratch]), host, device

        compilation_pipeline.PIPELINE_MAP[PIPELINE] = factory
    return PIPELINE
