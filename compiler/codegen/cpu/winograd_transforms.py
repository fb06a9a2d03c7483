"""Schedules for the transform kernels of relax_level/winograd.py, found by their TE op names.

Input (pad, then V[a, p, c]): the padded copy is parallel over rows and vectorized along c;
V runs a tile p per iteration, c by vectors, and its 16 components a unrolled innermost but
one, so the selects that pick each component's sum of taps fold to constants and the 16
tap vectors are loaded once for all of them.

Output (y[n, h, w, k], with any elementwise op fused after it inlined): h and w are split by
2 and their inner halves unrolled under the k vectors, so each 2x2 output tile reads its 16 M
vectors once and the parity selects fold.
"""

from __future__ import annotations

from typing import Any

from edgec.compiler.codegen.cpu.loops import extent, top_blocks, vectorize_inner
from edgec.compiler.codegen.cpu.tiles import CpuShape
from edgec.compiler.codegen.relax_level.winograd import INPUT, OUTPUT, PAD


def _loops(sch: Any, block: Any) -> tuple[list[Any], list[int]]:
    loops = sch.get_loops(block)
    return loops, [extent(sch, loop) or 0 for loop in loops]


def _input(sch: Any, blocks: list[Any], names: list[str], cpu: CpuShape) -> Any | None:
    if names[-1] != INPUT or names[-2] != PAD:
        return None
    for b in blocks[:-2]:
        sch.compute_inline(b)  # a transpose in front: read through its index map
    pad, block = blocks[-2], blocks[-1]
    loops, _ = _loops(sch, pad)
    sch.parallel(sch.fuse(*loops[:2]))
    vectorize_inner(sch, pad, cpu.lanes)
    (a, p, c), (_, _, channels) = _loops(sch, block)
    # Never left to the elementwise rule: it would inline the padded copy, whose guarded loads
    # then sit in V's selects (a build that did so crashed reading outside the input).
    v = next((n for n in (cpu.lanes, cpu.lanes // 2, 4, 2) if n > 1 and channels % n == 0), 1)
    if v > 1:
        c_o, c_v = sch.split(c, factors=[None, v])
        sch.reorder(p, c_o, a, c_v)
        sch.vectorize(c_v)
    else:
        sch.reorder(p, c, a)
    sch.parallel(p)
    sch.unroll(a)
    return sch


def _output(sch: Any, blocks: list[Any], cpu: CpuShape) -> Any | None:
    for b in blocks[:-1]:
        sch.compute_inline(b)
    block = blocks[-1]
    loops, extents = _loops(sch, block)
    if len(loops) != 4 or extents[1] % 2 or extents[2] % 2 or extents[3] % cpu.lanes:
        return None  # an NCHW output transpose last, or odd maps: the elementwise rule
    n, h, w, k = loops
    h_o, h_i = sch.split(h, factors=[None, 2])
    w_o, w_i = sch.split(w, factors=[None, 2])
    k_o, k_v = sch.split(k, factors=[None, cpu.lanes])
    sch.reorder(n, h_o, w_o, k_o, h_i, w_i, k_v)
    sch.parallel(sch.fuse(n, h_o, w_o))
    sch.unroll(h_i)
    sch.unroll(w_i)
    sch.vectorize(k_v)
    return sch


def winograd_transforms(func: Any, cpu: CpuShape) -> Any | None:
    """The schedule of a Winograd input or output transform kernel, else None."""
    from tvm import s_tir

    sch = s_tir.Schedule(func)
    blocks = [b for b, _ in top_blocks(sch)]
    names = [sch.get(b).name_hint for b in blocks]
    if INPUT in names:
        return _input(sch, blocks, names, cpu)
    if OUTPUT in names:
        return _output(sch, blocks, cpu)
    return None
