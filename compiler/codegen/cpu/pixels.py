"""How a conv's register tiles walk its output pixels: along each row, or the whole map as one
pixel loop, and how a walk that the tile does not divide ends (cpu/schedules.py tiles it).

A row of W columns takes only tiles w_i that divide W or leave a narrower tail; 7- and
13-wide rows leave few (7 x 1: 7 accumulators, under the 8 that hide the FMA latency). Indexed
as one loop p = h * W + w over the H x W map, every row tile still divides it and more do:
49 = 12 x 4 + 1 takes a 4 x 2 tile and one 1 x 2 tail for the whole map. The block's inputs
are then read at [p // W + kh, p % W + kw]: the division is once per tile, outside the
reduction.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from edgec.compiler.codegen.cpu.loops import order_tile, vectorize_inner
from edgec.compiler.codegen.cpu.tiles import busy, tile

if TYPE_CHECKING:
    from edgec.compiler.codegen.cpu.tiles import CpuShape

MAP_MIN_TILES = 8  # channel tiles a map with a tail needs: they are its only parallel loop


def whole_map(sch: Any, block: Any, after: list[Any], hw: tuple[int, int], channels: int,
              row: tuple[int, int, int], cpu: CpuShape, reduction: int,
              fixed: tuple[int, int] | None = None, pointwise: bool = False,
              group: int = 0) -> tuple[int, tuple[int, int, int]] | None:
    """Index an n, h, w, c conv block (and its epilogue) by pixel where the tile over the map
    beats the row's `row` tile; returns (pixels, (w_i, v, u)), or None with `sch` unchanged.
    With `fixed` (w_i, u), a tile edgec tune tries, the map is taken with that tile wherever
    its channel tiles allow. `group`: as tiles.tile's.

    Taken where the map's tile differs or keeps more FMA slots busy (single-thread A/B against
    ORT in the same runs, AVX2 Zen 3: 7x7 512->512 3x3 1.30x -> 1.12x ORT with 4 x 2 and a
    1 x 2 tail for 7 x 1; 14x14 256->256 3x3 1.40x -> 1.15x with 4 x 2 for 2 x 4; 13x13
    64->256 3x3 1.53x -> 1.43x with one 2 x 4 tail per map, not per row; 7x7 160->960 1x1
    1.52x -> 1.37x).
    """
    height, width = hw
    if not height:
        return None
    pixels = height * width
    flat = (tile(pixels, channels, cpu, reduction, tails=True, pointwise=pointwise, group=group)
            if fixed is None
            else (fixed[0], row[1], fixed[1]))
    if pixels % flat[0] and channels // (flat[1] * flat[2]) < MAP_MIN_TILES:
        return None
    if fixed is None and flat == row \
            and busy(pixels, flat[0], flat[2], cpu.in_flight) \
            <= busy(width, row[0], row[2], cpu.in_flight) + 0.01:
        return None

    index_by_pixel(sch, block, after[-1:], width)
    return pixels, flat


def index_by_pixel(sch: Any, block: Any, epilogue: list[Any], width: int) -> None:
    """Iterate an n, h, w, c block over (n, p = h * width + w, c), and the buffer it writes and
    its epilogue block (if any) with it, so the epilogue, computed at a tile, reads that tile
    and not the rows the tile touches. What the epilogue writes keeps its n, h, w, c layout."""
    from tvm.tirx import IndexMap

    def by_pixel(ndim: int) -> Any:
        return IndexMap.from_func(lambda n, h, w, *rest: (n, h * width + w, *rest), ndim=ndim)

    # a block layout, not a loop fuse: loop_partition needs the block's binding affine
    sch.transform_block_layout(block, by_pixel(len(sch.get(block).iter_vars)))
    if epilogue:
        sch.transform_layout(block, ("write", 0), by_pixel(4))
        sch.transform_block_layout(epilogue[0], by_pixel(4))


def row_with_tail(sch: Any, block: Any, n_s: int, n_r: int, full: int,
                  wi_u_v: tuple[int, int, int], after: list[Any], parallel: bool = True) -> Any:
    """Register tiles for a row (or map) that w_i does not divide (tile(..., tails=True)).

    The row loop is partitioned before it is tiled: `full` columns of whole w_i-wide tiles,
    then one tail tile as wide as the rest, each part its own copy of the block, so no
    predicate reaches an inner loop (and FLOP counts stay exact). The channel tile loop c_o
    stays outermost in the parallel loop (c_o, n, h; for a map c_o, n); the epilogue follows
    each row (or the map). Not `parallel` where a loop above the block is (chains).
    """

    wi, u, v = wi_u_v
    loops = sch.get_loops(block)
    loops = loops[len(loops) - n_s - n_r:]
    c_o, _, _ = sch.split(loops[n_s - 1], factors=[None, u, v])
    sch.reorder(c_o, *loops[: n_s - 1])
    rows = sch.fuse(c_o, *loops[: n_s - 2])
    if parallel:
        sch.parallel(rows)
    if after:
        sch.reverse_compute_at(after[-1], rows, preserve_unit_loops=True)
        vectorize_inner(sch, after[-1], v)
    sch.loop_partition(loops[n_s - 2], [full, None])
    for part in _reduction_blocks(sch, rows):
        w_i, c_u, c_v, *r = sch.get_loops(part)[-(3 + n_r):]
        if sch.get(w_i).min.value == 0:  # the whole tiles; the tail starts mid-row, one tile
            _, w_i = sch.split(w_i, factors=[None, wi])
        order_tile(sch, r, w_i, c_u, c_v, v)
        sch.decompose_reduction(part, r[0])
    return sch


def _reduction_blocks(sch: Any, loop: Any) -> list[Any]:
    """Blocks with a reduction iterator under `loop`, searched through nested blocks."""
    from tvm import tirx

    found, todo = [], list(sch.get_child_blocks(loop))
    while todo:
        b = todo.pop(0)
        if any(iv.iter_type == tirx.IterVar.CommReduce for iv in sch.get(b).iter_vars):
            found.append(b)
        else:
            todo.extend(sch.get_child_blocks(b))
    return found
