"""Schedules for CPU kernels: register-tiled, vectorized, parallel — no tuning needed.

The kernels come from a channels-last graph (relax_level/layout.py), so every CNN hot op is the same
loop nest: out[n, h, w, c] = epilogue(sum_R in[...] * w[..., c]) with c contiguous in the output and
in the weights. Conv (k x k and 1 x 1), depthwise/grouped conv, dense (out[0, j]) and pooling
(out[n, h, w, c] = max/sum_R in[...]) all fit it.

    parallel for (c_o, n, h, w_o):           # one output tile per iteration; c_o outermost so
        acc[w_i, c_i] = 0                     # a thread's tiles share one slice of the weights
        for R:                                # (kh, kw, c_in) or k; w_i x c_i accumulators
            for w_i (unrolled), c_i (vector): acc[w_i, c_i] += in_padded[...] * w[..., c_i]
        out[...] = epilogue(acc)              # bias, activation, residual add: fused

The tile is c_i = v * u lanes (v: the target's vector length in floats, u: vectors per row) by
w_i output columns, with u * w_i accumulators kept under the register file's size (cpu/tiles.py
chooses it). u * v divides the channels; w_i divides the row, or the row ends in one narrower
tail tile whose loop nest is a separate copy, so no predicate reaches an inner loop. Where a
tile over the whole map beats the row's, a conv's h and w are one pixel loop (cpu/pixels.py).
A grouped conv's vectors and tiles stay within one of its groups, so each vector reads one
broadcast input (tiles.vector_run; onnx_level/group_channels gives groups whole vectors).
Elementwise kernels get fused, parallel, vectorized loops; softmax-like kernels (blocks over the
same rows, some reducing them) one parallel loop over the rows (cpu/rows.py). A kernel that
matches no rule keeps TVM's default schedule.
"""

from __future__ import annotations

from typing import Any

from edgec.compiler.codegen.cpu.chains import conv_depthwise
from edgec.compiler.codegen.cpu.group_shuffle import group_shuffle
from edgec.compiler.codegen.cpu.int8 import int8_conv
from edgec.compiler.codegen.cpu.loops import (
    channel_period,
    extent,
    group_width,
    one_reduction,
    pack_weights,
    pads,
    parallel_vectorized,
    planes_to_channels,
    reduction_length,
    register_tile,
    spatial_prefix,
    top_blocks,
    vectorize_inner,
)
from edgec.compiler.codegen.cpu.pixels import row_with_tail, whole_map
from edgec.compiler.codegen.cpu.rows import row_reduction
from edgec.compiler.codegen.cpu.tiles import (
    RULE,
    CpuShape,
    Knobs,
    cpu_shape,
    k_block,
    pointwise_conv,
    pool_tile,
    tile,
    vector_run,
)
from edgec.compiler.codegen.cpu.winograd_transforms import winograd_transforms

PAD_COPY_MIN = 64  # a conv's reduction length from which its padded input is copied once


def reduction_tile(func: Any, cpu: CpuShape, knobs: Knobs = RULE,
                   copy_pads: bool = False) -> Any | None:
    """Conv, depthwise, dense, pooling: one S..SR..R block with injective prologue/epilogue.

    `knobs` fix the tile, the pixel walk or the K-blocking instead of the cost model;
    `copy_pads`: a padded input is copied once per call whatever the reduction's length."""
    from tvm import s_tir

    sch = s_tir.Schedule(func)
    found = one_reduction(sch, cpu.lanes)
    if found is None:
        return None
    block, kinds, before, after = found
    n_s = spatial_prefix(kinds)
    if n_s < 2:
        return None
    red = reduction_length(sch, block, n_s)
    grouped = group_width(sch.get(block), n_s)
    if not after and (grouped or not red and len(sch.get(block).reads) > 1):
        # A grouped or depthwise conv with no epilogue (a decomposition's KxK conv has no
        # bias) sums into a tile of its own (stack scratch, registers) stored once, not in
        # its output: 16 -> 32 channels in 4 groups on a 32x32 map, 19.4 -> 11.1 us, a
        # 16-channel depthwise conv 3.6 -> 2.4 us. A dense conv's ran the same either way.
        after = [sch.cache_write(block, 0, "global")]
    # Depthwise and pooling read their padding in place (a bounds check per load), measured
    # faster on MobileNetV2 than a padded copy per tile or per call. A conv's inner loop reads
    # each input once per output tile and channel, so there the checks cost more than one
    # padded copy per call (row-parallel): ResNet-18's 7x7 3x3 conv went from 89 to 147
    # GFLOP/s, its 7x7 RGB stem (reduction 147) from 3.0 to 1.5 ms. Not below PAD_COPY_MIN:
    # MobileNetV3's 3x3 RGB stem (27) went from 0.13 to 0.19 ms with the copy. Nor for a
    # grouped conv, whose inputs only its own group's tiles read (often one): a 56x56 64 -> 64
    # conv in 4 groups ran in 154 us in place and 272 with the copy (AVX-512, 2 threads).
    padded = (before[-1] if (copy_pads or red >= PAD_COPY_MIN and not grouped) and before
              and pads(sch.get(before[-1])) else None)
    for b in before:
        if b is not padded:
            sch.compute_inline(b)
    if padded is not None:
        sch.parallel(sch.fuse(*sch.get_loops(padded)[:-2]))
        vectorize_inner(sch, padded, cpu.lanes)
    loops = sch.get_loops(block)
    if len(loops) != len(kinds):
        return None
    width, channels = extent(sch, loops[n_s - 2]), extent(sch, loops[n_s - 1])
    if width is None or channels is None:
        return None
    group = vector_run(channel_period(sch.get(block), n_s), cpu)  # a tile within one group
    c_in = extent(sch, loops[-1]) or 0  # a conv's reduction is c_in only for a 1x1 conv
    # a 1x1 conv (n, h, w, c) or a batched GEMM (Winograd's: a, tiles, c)
    pointwise = n_s in (3, 4) and pointwise_conv(cpu, red, c_in)
    wi, v, u = tile(width, channels, cpu, red, tails=True, pointwise=pointwise, group=group)
    if not red and len(sch.get(block).reads) == 1:  # pooling: no weights
        wi, u = pool_tile(channels, v)
    if knobs.tile:
        wi, u = knobs.tile
    n_r = len(kinds) - n_s
    # A 1x1 conv whose reduction is blocked keeps its rows: the blocks sit above a row's
    # tiles. Where its tiles are judged by loads per FMA (tile_cost), the map comes first.
    kb = k_block(c_in, u * v, red, cpu.l1_weights) if n_s == 4 and knobs.k_block else 0
    if n_s == 4 and red and (pointwise or not kb) and knobs.walk != "rows":
        flat = whole_map(sch, block, after, (extent(sch, loops[1]) or 0, width), channels,
                         (wi, v, u), cpu, red, fixed=knobs.tile if knobs.walk == "map" else None,
                         pointwise=pointwise, group=group)
        if flat:
            n_s, width, (wi, v, u), kb = 3, flat[0], flat[1], 0
    if wi > width or (knobs.walk == "map" and n_s == 4):
        return None  # a tile the rows cannot take, or a map that declined its fixed tile
    pack_weights(sch, func, block, u * v, channels)
    if width % wi:
        return row_with_tail(sch, block, n_s, n_r, width - width % wi, (wi, u, v), after)
    # c_o outermost: consecutive tiles of a thread reuse one slice of the weights from cache.
    outer, reduction = register_tile(sch, block, n_s, wi, u, v)
    if knobs.pixels_outer and len(outer) > 2 and not kb:
        # each thread then reads the rows the previous kernel's thread wrote, and all weights
        sch.reorder(*outer[1:], outer[0])
        outer = [*outer[1:], outer[0]]
    if kb:
        r_loops = sch.get_loops(block)[len(outer): len(outer) + n_r]
        r_o, r_i = sch.split(r_loops[-1], factors=[None, kb])
        sch.reorder(*outer[:-1], r_o, outer[-1], *r_loops[:-1], r_i)
        outer, reduction = outer[:-1], r_o
    fused = sch.fuse(*outer)
    sch.parallel(fused)
    if after:
        sch.reverse_compute_at(after[-1], fused, preserve_unit_loops=True)
        vectorize_inner(sch, after[-1], v)
    sch.decompose_reduction(block, reduction)
    return sch


def elementwise(func: Any, cpu: CpuShape) -> Any | None:
    """Injective kernels (transposes, adds, activations): fused, parallel, vectorized."""
    from tvm import s_tir

    sch = s_tir.Schedule(func)
    blocks = top_blocks(sch)
    if not blocks or any(set(kinds) != {"S"} for _, kinds in blocks):
        return None
    for b, _ in blocks[:-1]:
        sch.compute_inline(b)
    block = blocks[-1][0]
    if not sch.get_loops(block):
        return None
    if not planes_to_channels(sch, block, cpu.lanes):
        parallel_vectorized(sch, block, cpu.lanes)
    return sch


RULES = {"int8": int8_conv, "conv_depthwise": conv_depthwise, "group_shuffle": group_shuffle,
         "reduction_tile": reduction_tile,
         "winograd": winograd_transforms, "row_reduction": row_reduction,
         "elementwise": elementwise}


def schedule(func: Any, cpu: CpuShape) -> tuple[str, Any] | None:
    """(rule name, schedule) from the first rule that takes `func`, or None.

    A rule that raises on an unexpected loop nest counts as declining: the kernel is left to
    TVM's default lowering (or to tuning) instead of failing the build.
    """
    for name, rule in RULES.items():
        try:
            sch = rule(func, cpu)
        except (RuntimeError, ValueError):  # ScheduleError, InternalError
            sch = None
        if sch is not None:
            return name, sch
    return None


def schedule_pass(tvm_target: Any, kernels: dict[str, str]) -> Any:
    """A module pass scheduling every unscheduled kernel by the first rule that takes it.

    `kernels` receives kernel name -> the rule that scheduled it, or "unscheduled".
    """
    from edgec.compiler.codegen.scheduling import schedule_kernels

    cpu = cpu_shape(tvm_target)

    def choose(func: Any) -> tuple[str, Any]:
        found = schedule(func, cpu)
        return (found[0], found[1].mod["main"]) if found else ("unscheduled", None)

    return schedule_kernels("EdgecCpuSchedules", choose, kernels)
