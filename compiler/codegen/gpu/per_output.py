"""GPU rule `PerOutput`: a kernel of several stages computed by one thread per output element.

Pattern: a fused kernel that, after inlining what can be inlined, still has more than one
stage (SBlock): a reduction with an epilogue (a grouped conv + bias add, a pooled value, a
transposed conv + activation), or a chain of reductions (pool -> conv).

Why: dlight's Fallback binds every remaining stage to its own blockIdx/threadIdx loops in one
launch. Each stage then reads what other threads of the same launch write, with no grid-wide
barrier between stages: a race, wrong on a real GPU and on PoCL alike (a grouped 1x1 conv +
bias with two outputs per group gave errors of 1.5 on outputs of magnitude 3).

Rewrite: the last stage's spatial loops are fused and split across blockIdx.x / threadIdx.x;
every earlier stage is moved under that thread loop (compute_at, last producer first) into
thread-local memory, so each thread computes exactly the producer values its output reads
before reading them. No value crosses threads, so no barrier is needed; work is repeated
where two outputs read the same producer value (a per-output recomputation, correct and
simple, the floor for odd kernels).

Declines (returns None, the next rule is tried): a kernel with no reduction stage before its
last (Fallback's binding is then race-free), or a producer that cannot be moved under the
consumer's loop.
"""

from __future__ import annotations

from typing import Any

from tvm import s_tir, tirx
from tvm.s_tir.dlight import base
from tvm.s_tir.dlight.analysis import normalize_prim_func
from tvm.s_tir.dlight.gpu.base import GPUScheduleRule


def _inline_producers(sch: Any, blocks: list[Any]) -> list[Any]:
    """Inline the stages that can be computed inline into their readers (pads, casts); never
    an epilogue into a reduction: reverse_compute_inline folds a bias add into a reduction
    whose loops are all of extent 1 as if it were elementwise, and the sum then starts from
    the previous call's value (TVM 0.27)."""
    while True:
        for i, info in enumerate(blocks[:-1]):
            try:
                sch.compute_inline(info.block_rv)
            except Exception:  # noqa: BLE001 - not inlinable: it stays a stage
                continue
            blocks.pop(i)
            break
        else:
            return blocks


def _reduces(sch: Any, info: Any) -> bool:
    return sch.get(info.block_rv).init is not None


class PerOutput(GPUScheduleRule):
    """One thread per output element of a multi-stage kernel (module docstring)."""

    def apply(self, func: Any, target: Any, _tunable: bool) -> Any:
        if not isinstance(func, tirx.PrimFunc) or not self.is_target_available(target):
            return None
        sch = s_tir.Schedule(func)
        infos = normalize_prim_func(sch)
        if infos is None or len(infos) < 2:
            return None
        *producers, last = _inline_producers(sch, infos)
        if not producers or not any(_reduces(sch, p) for p in producers):
            return None
        loops = sch.get_loops(last.block_rv)
        kinds = last.dom_kind()
        spatial = loops[:len(kinds) - kinds.count("R")]
        if not spatial or kinds[:len(spatial)] != "S" * len(spatial):
            return None
        block_x, thread_x = sch.split(sch.fuse(*spatial),
                                      factors=[None, base.max_threads_per_block(target)])
        sch.bind(block_x, "blockIdx.x")
        sch.bind(thread_x, "threadIdx.x")
        try:
            for info in reversed(producers):
                sch.compute_at(info.block_rv, thread_x, preserve_unit_loops=True)
                sch.set_scope(info.block_rv, 0, "local")  # the thread's own values only
        except Exception:  # noqa: BLE001 - a producer the consumer's loop cannot hold
            return None
        return sch
