"""Schedule for a conv kernel merged with the depthwise conv that reads its output
(relax_level/merge_chains.py): the conv's output is made and consumed one channel chunk at a time.

    parallel for chunk:                            # `chunk` channels of the conv's output
        for (n, h, w_o, c_o):  conv tile + epilogue -> mid[n, h, w, chunk]   (all pixels)
        for (n, h, w_o, c_o):  depthwise tile reading mid -> out[n, h, w, chunk]

A depthwise conv's output channel c reads only channel c of its input, so a chunk of the
conv's channels is all its depthwise needs: no halo, nothing computed twice. Unmerged, the
conv writes the whole H x W x C tensor (MobileNetV2's 112 x 112 x 96 is 4.8 MB) before the
depthwise conv reads it back, from DRAM once it outgrows the L2. Here `mid` is one chunk,
H x W x chunk floats kept under CHUNK_BYTES so it is still in L2 when the depthwise conv
reads it. Chunks are a multiple of the vector length and at least MIN_CHUNKS, so the threads
have work to share. Both convs keep schedules' register tiles, repacked weights and fused
epilogues.

On a map tall enough (band_rows), the depthwise output rows are cut into bands as well:

    parallel for (band, chunk):                    # `band` output rows, `chunk` channels
        conv tile + epilogue -> mid over the band's input rows (s * band + k - s of them)
        depthwise tile reading mid -> out[n, band rows, w, chunk]

Each band recomputes the k - s conv rows it shares with the next (its halo), and in return
its input rows and `mid` stay in L2 for all of its chunks, and the chunks need not be thin
to keep `mid` small: they take as many channels as the conv's own register tile
(tiles.tile over all channels), not one vector. MobileNetV2's 112 x 112 16 -> 96 chain
went from 8-channel chunks of the whole map (a 7 x 1 conv tile, 7 accumulators, its
800 KiB input re-read for every chunk) to 16-channel chunks of 7-row bands (4 x 2).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from edgec.compiler.codegen.cpu.loops import (
    fusable_epilogue,
    group_width,
    pack_weights,
    reduction_length,
    register_tile,
    spatial_prefix,
    top_blocks,
    vectorize_inner,
)
from edgec.compiler.codegen.cpu.pixels import index_by_pixel, row_with_tail
from edgec.compiler.codegen.cpu.tiles import RULE, Knobs, pointwise_conv, tile

if TYPE_CHECKING:
    from edgec.compiler.codegen.cpu.tiles import CpuShape

CHUNK_BYTES = 512 * 1024  # of a 1 MiB L2, leaving room for the conv's input and weights
MIN_CHUNKS = 8  # measured on MobileNetV2: 4 gave 3.88 ms, 8 and 16 3.68 ms (2 threads)
# Conv output rows a band computes at least, so that its halo (k - s rows) stays a small
# share: 2 of 14 for a 3x3 stride-1 depthwise conv, 1 of 14 for stride 2. MobileNetV2, whole
# model, 2 threads: 8 and 24 ran within 2% of 14 (noise); without bands, 1.08x as long.
BAND_ROWS = 14


def kind(func: Any) -> str | None:
    """'conv' (broadcast input, 4-D NHWC output), 'depthwise' (channelwise, with weights) or
    None, for a kernel with a single S..SR..R block."""
    from tvm import s_tir

    sch = s_tir.Schedule(func)
    reds = [(b, k) for b, k in top_blocks(sch) if set(k) != {"S"}]
    if len(reds) != 1 or spatial_prefix(reds[0][1]) != 4:
        return None
    block = reds[0][0]
    if group_width(sch.get(block), 4):
        return None  # a grouped conv: neither a chain's conv nor its channelwise depthwise
    if reduction_length(sch, block, 4):
        return "conv"
    return "depthwise" if len(sch.get(block).reads) >= 2 else None  # pooling has no weights


def _shape(sch: Any, block: Any) -> list[int]:
    return [int(x) for x in sch.get(block).writes[0].source.shape]


def chunk_channels(pixels: int, channels: int, v: int, bands: int = 1, most: int = 0) -> int:
    """Channels per chunk: the most vectors (up to `most`, where given) that divide the
    channels, keep `pixels` x chunk floats under CHUNK_BYTES and leave MIN_CHUNKS or more
    chunks across the `bands`."""
    vectors = channels // v
    for m in range(min(vectors, most or vectors), 0, -1):
        if vectors % m == 0 and pixels * m * v * 4 <= CHUNK_BYTES \
                and vectors // m * bands >= MIN_CHUNKS:
            return m * v
    return v


def band_rows(height: int, stride: int) -> int:
    """Depthwise output rows per band (a divisor of `height` leaving two bands or more, each
    computing at least BAND_ROWS conv rows), or 0: the whole map in one."""
    return next((r for r in range(1, height // 2 + 1)
                 if height % r == 0 and r * stride >= BAND_ROWS), 0)


def plan(mid: list[int], h_dw: int, red: int, cpu: CpuShape, knobs: Knobs = RULE,
         by_map: bool = False) -> tuple[int, int]:
    """(depthwise output rows per band, 0 for the whole map; channels per chunk) of a chain
    whose conv writes `mid` (n, h, w, c) with reduction length `red` and whose depthwise
    conv writes `h_dw` rows. A conv walking its whole map (`by_map`) is not banded."""
    n, h, w, c = mid
    stride = -(-h // h_dw)
    band = 0 if by_map else knobs.band if knobs.band else band_rows(h_dw, stride)
    band = max(band, 0)
    if knobs.chunk:
        return band, knobs.chunk
    v = tile(w, c, cpu)[1]
    if band:
        return band, chunk_channels(band * stride * w, c, v, max(h_dw // band, 1),
                                    tile(w, c, cpu, red)[2])
    return band, chunk_channels(n * h * w, c, v)


def chain_dims(func: Any) -> tuple[list[int], int, int, tuple[int, int]] | None:
    """(the conv's output shape n, h, w, c; its reduction length; its input channels; the
    depthwise output's height and width) of a merged conv -> depthwise kernel, else None."""
    from tvm import s_tir

    sch = s_tir.Schedule(func)
    reds = [b for b, k in top_blocks(sch) if set(k) != {"S"} and spatial_prefix(k) == 4]
    if len(reds) != 2 or reduction_length(sch, reds[1], 4):
        return None
    red = reduction_length(sch, reds[0], 4)
    h_dw, w_dw = _shape(sch, reds[1])[1:3]
    return (_shape(sch, reds[0]), red, _c_in(sch, reds[0]), (h_dw, w_dw)) if red else None


def _c_in(sch: Any, conv: Any) -> int:
    """A conv's input channels: its last reduction iterator (kh, kw, c_in)."""
    return int(sch.get(conv).iter_vars[-1].dom.extent)


def conv_depthwise(func: Any, cpu: CpuShape, knobs: Knobs = RULE) -> Any | None:
    """A merged conv -> depthwise kernel: blocks [conv prologue], conv, conv epilogue,
    [depthwise padding], depthwise, depthwise epilogue. `knobs` fix the chunk or either
    tile instead of the cost model (edgec tune's variants: cpu/knobs.py)."""
    from tvm import s_tir

    sch = s_tir.Schedule(func)
    blocks = top_blocks(sch)
    reds = [i for i, (_, k) in enumerate(blocks) if set(k) != {"S"}]
    if len(reds) != 2:
        return None
    (conv, k_a), (dw, k_b) = blocks[reds[0]], blocks[reds[1]]
    if spatial_prefix(k_a) != 4 or spatial_prefix(k_b) != 4:
        return None
    if not reduction_length(sch, conv, 4) or reduction_length(sch, dw, 4):
        return None
    mid_shape = _shape(sch, conv)
    between = [b for b, _ in blocks[reds[0] + 1: reds[1]]]
    # the conv's epilogue keeps its output shape; the depthwise padding grows it
    epilogue = [b for b in between if _shape(sch, b) == mid_shape]
    padding = between[len(epilogue):]
    if any(_shape(sch, b) == mid_shape for b in padding):
        return None
    if any(_shape(sch, b)[3] != mid_shape[3] for b in padding):
        # a channel slice between the convs (pad_channels' Slice of a padded conv before a
        # SiLU's Mul, x * sigmoid(x)): the conv's output is then read past `mid`, around it
        return None
    after = fusable_epilogue(sch, dw, [b for b, _ in blocks[reds[1] + 1:]], cpu.lanes)
    for b in [b for b, _ in blocks[: reds[0]]] + epilogue[:-1] + padding:
        sch.compute_inline(b)
    mid = epilogue[-1] if epilogue else None  # the block writing what the depthwise reads

    n, h, w, c = mid_shape
    red = reduction_length(sch, conv, 4)
    # A 1x1 conv walks the chunk's whole map (pixels), as reduction_tile's do
    by_map = mid is not None and (
        knobs.walk == "map" or not knobs.walk and pointwise_conv(cpu, red, _c_in(sch, conv)))
    _, h_dw, w_dw, _ = _shape(sch, dw)
    band, chunk = plan(mid_shape, h_dw, red, cpu, knobs, by_map)
    if band and h_dw % band:
        return None
    width = h * w if by_map else w
    wi_a, v_a, u_a = tile(width, chunk, cpu, red, tails=by_map, pointwise=by_map)
    wi_b, v_b, u_b = tile(w_dw, chunk, cpu)
    if knobs.tile:
        wi_a, u_a = knobs.tile
    if knobs.depthwise:
        wi_b, u_b = knobs.depthwise
    if c % chunk or chunk % (u_a * v_a) or chunk % (u_b * v_b) or wi_a > width \
            or w % wi_a and not by_map or w_dw % wi_b:
        return None  # knobs that do not divide the chunk or the rows
    if by_map:
        index_by_pixel(sch, conv, [mid], w)
    pack_weights(sch, func, conv, u_a * v_a, c)
    pack_weights(sch, func, dw, u_b * v_b, c)

    (c_k, *rest), r_b = register_tile(sch, dw, 4, wi_b, u_b, v_b, chunk=chunk)
    if band:  # band outermost: a thread's consecutive chunks share the band's input rows
        b, rows = sch.split(rest[1], factors=[None, band])
        sch.reorder(b, rest[0], c_k)
        c_k, rest = sch.fuse(b, rest[0], c_k), [rows, *rest[2:]]
    tile_b = sch.fuse(*rest)
    sch.parallel(c_k)
    if after:
        sch.reverse_compute_at(after[-1], tile_b, preserve_unit_loops=True)
        vectorize_inner(sch, after[-1], v_b)
    # The conv moves under the chunk loop; the region the depthwise reads is one chunk (of
    # one band, its halo rows included).
    if mid is not None:
        sch.compute_at(mid, c_k, preserve_unit_loops=True)
    sch.compute_at(conv, c_k, preserve_unit_loops=True)
    sch.decompose_reduction(dw, r_b)
    n_s = 3 if by_map else 4
    if width % wi_a:
        n_r = len(sch.get(conv).iter_vars) - n_s
        return row_with_tail(sch, conv, n_s, n_r, width - width % wi_a, (wi_a, u_a, v_a),
                             [mid], parallel=False)
    outer, r_a = register_tile(sch, conv, n_s, wi_a, u_a, v_a)
    tile_a = sch.fuse(*outer)
    if mid is not None:
        sch.reverse_compute_at(mid, tile_a, preserve_unit_loops=True)
        vectorize_inner(sch, mid, v_a)
    sch.decompose_reduction(conv, r_a)
    return sch
