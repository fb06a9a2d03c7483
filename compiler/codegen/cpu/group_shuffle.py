"""group_shuffle: grouped convs whose groups are narrower than a vector, on full vectors.

Pattern: a grouped conv (channels-last, out[n, h, w, c] = sum_(kh, kw, rc) in[n, h', w',
c // m * C_g + rc] * W[kh, kw, rc, c], m output channels per group, C_g inputs) with
1 < m < lanes, lanes a multiple of m, the output channels a multiple of lanes and rows that
split into tiles of 2 or more columns: the grouped KxK conv of a low-rank pair (compress: 4
groups of 4 -> 16 channels), or any conv whose groups hold fewer channels than a vector.
Declines (the tile rule takes the kernel): any other shape, or an input read other than
channels-last (a transpose merged into the conv).

The tile rule (schedules.reduction_tile) keeps a vector within one group so that each vector
reads one broadcast input; with m < lanes that vector has m lanes (4 of AVX-512's 16), and a
gather across groups costs a load per lane. Here one vector covers lanes / m groups: for each
tap (kh, kw) the tile's input pixels are copied once into a local buffer, lanes / m * C_g
channels per pixel (the groups the vector covers, contiguous), and for each rc the vector
[in[c // m * C_g + rc] for c in the vector] reads that buffer at constant offsets, which LLVM
turns into one permute of the pixel's registers (vpermps, tbl) instead of m-lane FMAs:

    parallel for (c_o, n, h):
      for w_o:
        acc[w_i, lanes] = 0
        for kh, kw:
          local[w_i, lanes / m * C_g] = in_padded[n, h + kh, w_o * W_i + w_i + kw, window]
          for rc (unrolled), w_i (unrolled): acc[w_i] += permute(local[w_i], rc) * W[kh, kw, rc]
        out[...] = epilogue(acc)

A 32x32 map, 16 -> 16 channels in 4 groups of 4, ran in 7.7 us where the 4-lane tiles took
about 20 (AVX-512). The padding, where the conv has a pad stage, is evaluated in the local
copy (one test per pixel, not per lane). W_i pixels per tile keep W_i accumulators and
W_i * lanes / m * C_g / lanes input registers within the register file.
"""

from __future__ import annotations

from typing import Any

from edgec.compiler.codegen.cpu.loops import (
    channelwise,
    extent,
    group_width,
    grouped_read,
    one_reduction,
    pack_weights,
    pads,
    spatial_prefix,
    vectorize_inner,
)
from edgec.compiler.codegen.cpu.tiles import CpuShape

MAX_PIXELS = 8  # output columns per tile, at most


def _pixels(width: int, window_vectors: int, cpu: CpuShape) -> int:
    """Output columns per tile: the most (a divisor of the row, at most MAX_PIXELS) whose
    accumulators and input registers fit the register file."""
    for wi in range(min(MAX_PIXELS, width), 1, -1):
        if width % wi == 0 and wi * (1 + window_vectors) <= cpu.registers:
            return wi
    return 0  # one column per tile: the tile rule's row tails do better


def _pixels_of(sch: Any, block: Any, cpu: CpuShape) -> int:
    """W_i for a grouped conv block this rule takes, else 0."""
    loops = sch.get_loops(block)
    m = group_width(sch.get(block), 4)
    channels, width, c_g = extent(sch, loops[3]), extent(sch, loops[2]), extent(sch, loops[-1])
    if not (1 < m < cpu.lanes and cpu.lanes % m == 0) or not channels or not width or not c_g:
        return 0
    if channels % cpu.lanes:
        return 0
    window = cpu.lanes // m * c_g
    return _pixels(width, -(-window // cpu.lanes), cpu)


def group_shuffle(func: Any, cpu: CpuShape) -> Any | None:
    """The schedule of the module docstring for a grouped conv kernel, or None."""
    from tvm import s_tir

    sch = s_tir.Schedule(func)
    found = one_reduction(sch, cpu.lanes)
    if found is None:
        return None
    block, kinds, before, after = found
    if spatial_prefix(kinds) != 4 or len(kinds) != 7:  # n, h, w, c; kh, kw, rc
        return None
    wi = _pixels_of(sch, block, cpu)
    if not wi:
        return None
    padded = before[-1] if before and pads(sch.get(before[-1])) else None
    for b in before:
        if b is not padded:
            sch.compute_inline(b)
    # a pad whose reads follow its channel reads a channels-last input
    if padded is not None and not channelwise(sch.get(padded), 4):
        return None  # a transpose merged in: each pixel's channels are strided
    if not after:  # the sums go to a tile of their own, stored once
        after = [sch.cache_write(block, 0, "global")]
    n, h, w, c, kh, kw, rc = sch.get_loops(block)
    channels = extent(sch, c)
    pack_weights(sch, func, block, cpu.lanes, channels)
    n, h, w, c, kh, kw, rc = sch.get_loops(block)
    w_o, w_i = sch.split(w, factors=[None, wi])
    c_o, c_i = sch.split(c, factors=[None, cpu.lanes])
    sch.reorder(c_o, n, h, w_o, kh, kw, rc, w_i, c_i)
    if padded is None:
        read = grouped_read(sch.get(block), 4)
        if read is None:
            return None
        copy = sch.cache_read(block, read, "global")
    else:
        copy = padded
    sch.compute_at(copy, kw, preserve_unit_loops=True)
    sch.set_scope(copy, 0, "local")
    vectorize_inner(sch, copy, cpu.lanes)
    sch.unroll(rc)
    sch.unroll(w_i)
    sch.vectorize(c_i)
    outer = sch.fuse(c_o, n, h)
    sch.parallel(outer)
    sch.reverse_compute_at(after[-1], w_o, preserve_unit_loops=True)
    vectorize_inner(sch, after[-1], cpu.lanes)
    sch.decompose_reduction(block, kh)
    return sch
