"""Schedule for row-reduction kernels: softmax, layer norm over the innermost axis and their
kin, several blocks over the same rows, some of them reducing each row's innermost axis.

    parallel for row:                      # every loop but the innermost, fused
        max[row] = max_k x[row, k]         # each block computed for one row at a time,
        e[row, k] = exp(x[row, k] - max)   # in the kernel's order
        sum[row] = sum_k e[row, k]
        out[row, k] = e[row, k] / sum      # innermost vectorized where the lanes divide it

Each row's scratch is written and read by one thread while it is in L1. A CTC text
recognizer's softmax over 97 classes of 24 columns was left to TVM's default schedule (one
serial loop nest per block) before this rule.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from edgec.compiler.codegen.cpu.loops import extent, top_blocks

if TYPE_CHECKING:
    from edgec.compiler.codegen.cpu.tiles import CpuShape


def _domain(sch: Any, block: Any) -> list[int | None]:
    return [int(iv.dom.extent) if hasattr(iv.dom.extent, "value") else None
            for iv in sch.get(block).iter_vars]


def _same_rows(sch: Any, blocks: list[tuple[Any, str]], rows: list[int | None]) -> bool:
    """Every block iterates the last block's rows: spatial over its whole domain, spatial over
    the rows alone (layer norm's mean from its sum), or spatial over the rows and reducing one
    innermost axis."""
    for block, kinds in blocks:
        dom = _domain(sch, block)
        if kinds == "S" * len(rows):
            if dom != rows:
                return False
        elif kinds not in ("S" * (len(rows) + 1), "S" * len(rows) + "R") or dom[:-1] != rows:
            return False
    return True


def row_reduction(func: Any, cpu: CpuShape) -> Any | None:
    """Softmax-like kernels: a spatial last block over (rows..., k), the blocks before it over
    the same rows (_same_rows), at least one of them reducing k. None where the kernel does
    not fit."""
    from tvm import s_tir

    sch = s_tir.Schedule(func)
    blocks = top_blocks(sch)
    if len(blocks) < 2 or not any("R" in kinds for _, kinds in blocks[:-1]):
        return None
    last, kinds = blocks[-1]
    dom = _domain(sch, last)
    if set(kinds) != {"S"} or len(kinds) < 2 or None in dom:
        return None
    if not _same_rows(sch, blocks[:-1], dom[:-1]):
        return None
    loops = sch.get_loops(last)
    row = sch.fuse(*loops[:-1]) if len(loops) > 2 else loops[0]
    sch.parallel(row)
    for block, _ in reversed(blocks[:-1]):
        sch.compute_at(block, row, preserve_unit_loops=True)
    for block, block_kinds in blocks:
        inner = sch.get_loops(block)[-1]
        if set(block_kinds) == {"S"} and (extent(sch, inner) or 0) % cpu.lanes == 0:
            sch.vectorize(inner)
    return sch
