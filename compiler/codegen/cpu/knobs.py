"""What `edgec tune` varies in edgec's own conv schedules, besides MetaSchedule's search.

reduction_tile (cpu/schedules.py) picks its register tile, its pixel walk (rows, or the whole
map as one loop: cpu/pixels.py) and a 1x1 conv's K-blocking by a cost model: accumulators
against FMA latency, weights against L1 and L2, loads per FMA. The model ranks; it does not
time. Here the best-ranked alternatives to its pick are made, by the same rule with its knobs
fixed (tiles.Knobs), for tune to time:

    walks    rows; the map, for an n, h, w, c conv with more than one row
    tiles    every (w_i, u) the register file holds (tiles.candidates, without the rule's
             limit on live registers) with >= MIN_ACCUMULATORS accumulators, ranked per walk by:
             weights in L2, 8 accumulators, FMA slots kept busy (tiles.busy, tails
             included), loads per FMA; the first PER_WALK of each walk
    K-block  off, for a 1x1 conv whose rule blocks its reduction
    order    the rule's tile and walk with the pixel tiles outermost in the parallel loop
             (channel tiles first is the rule's: a thread's tiles share a slice of the
             weights; pixels first, a thread reads the rows the kernel before it wrote)
    chains   a conv -> depthwise kernel (cpu/chains.py): the conv's tile (PER_CHAIN, ranked as
             above; over the chunk's map where the rule walks it, with the rows as one more
             variant), the depthwise tile (PER_CHAIN, ranked by tiles.tile_cost), the chunk
             halved or doubled, the band (rows) halved or doubled or the whole map; one knob
             at a time. MetaSchedule cannot express its schedule at all (tune.KEEP): these
             are the only candidates MobileNetV2's chains get.

A variant whose lowered code is the rule's (or another variant's) is dropped. MetaSchedule's
space has none of these schedules: its candidates had never beaten the rules on AVX2
(BENCHMARKS.md), while a tile the model ranks second may win where its estimates are off.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from edgec.compiler.codegen.cpu.chains import chain_dims, plan
from edgec.compiler.codegen.cpu.loops import (
    group_width,
    reduction_length,
    spatial_prefix,
    top_blocks,
)
from edgec.compiler.codegen.cpu.pixels import MAP_MIN_TILES
from edgec.compiler.codegen.cpu.schedules import RULES, schedule
from edgec.compiler.codegen.cpu.tiles import (
    CpuShape,
    Knobs,
    busy,
    candidates,
    pointwise_conv,
    tile_cost,
    vector_run,
)

VARIED = ("reduction_tile", "conv_depthwise")  # the rules (schedules.RULES) with knobs
PER_WALK = 8
PER_CHAIN = 4  # conv tiles, and depthwise tiles, of a conv -> depthwise chain
MIN_ACCUMULATORS = 4


def _dims(func: Any) -> tuple[int, int, int, int, int, int] | None:
    """(n_s, height, width, channels, reduction, group width or 0) of a kernel's single
    S..SR..R block."""
    from tvm import s_tir

    sch = s_tir.Schedule(func)
    reds = [(b, k) for b, k in top_blocks(sch) if set(k) != {"S"}]
    if len(reds) != 1 or spatial_prefix(reds[0][1]) < 2:
        return None
    block, kinds = reds[0]
    n_s = spatial_prefix(kinds)
    extents = [int(iv.dom.extent) for iv in sch.get(block).iter_vars]
    height = extents[1] if n_s == 4 else 1
    return (n_s, height, extents[n_s - 2], extents[n_s - 1], reduction_length(sch, block, n_s),
            group_width(sch.get(block), n_s))


def _unlimited(cpu: CpuShape) -> CpuShape:
    """`cpu` without the rule's limit on live registers (tiles.tile, AVX2): 6 x 2 tiles
    (12 accumulators) ran ResNet-18's 14x14 and 7x7 3x3 convs 5-16% faster than the rule's
    4 x 2 on some layers and slower on others (single thread, warm): worth timing, not a rule."""
    return dataclasses.replace(cpu, live=0)


def _rank(length: int, wi: int, u: int, v: int, red: int, cpu: CpuShape) -> tuple[Any, ...]:
    loads = (wi + u) / (wi * u)
    return (u * v * red * 4 > cpu.l2_weights, wi * u < cpu.in_flight,
            -round(busy(length, wi, u, cpu.in_flight), 2), loads)


def _chain_knob_sets(func: Any, cpu: CpuShape) -> list[Knobs]:
    """A conv -> depthwise chain's: its conv's tile, its depthwise tile, its chunk, its band,
    one at a time (all at once would be hundreds of builds)."""
    dims = chain_dims(func)
    if dims is None:
        return []
    (n, h, w, c), red, c_in, (h_dw, w_dw) = dims
    v = candidates(w, c, cpu)[0]
    # a 1x1 conv's tiles walk the chunk's map, tails allowed; the rows are then a variant
    by_map = pointwise_conv(cpu, red, c_in)
    band, chunk = plan([n, h, w, c], h_dw, red, cpu, by_map=by_map)
    length = h * w if by_map else w
    _, convs = candidates(length, chunk, _unlimited(cpu), red)
    convs = sorted((s for s in convs if (by_map or w % s[0] == 0)
                    and s[0] * s[1] >= MIN_ACCUMULATORS),
                   key=lambda s: _rank(length, *s, v, red, cpu))
    _, dws = candidates(w_dw, chunk, cpu)
    dws = sorted((s for s in dws if w_dw % s[0] == 0 and s[0] * s[1] >= MIN_ACCUMULATORS),
                 key=lambda s: tile_cost(*s, v, 0, live=bool(cpu.live),
                                               in_flight=cpu.in_flight))
    chunks = [k for k in (chunk * 2, chunk // 2) if k % v == 0 and k and c % k == 0]
    bands = [-1] * bool(band) + [r for r in (band * 2, band // 2)
                                 if band and r and h_dw % r == 0 and h_dw // r >= 2]
    return ([Knobs(tile=s) for s in convs[:PER_CHAIN]] + [Knobs(walk="rows")] * by_map
            + [Knobs(depthwise=s) for s in dws[:PER_CHAIN]] + [Knobs(chunk=k) for k in chunks]
            + [Knobs(band=r) for r in bands])


def knob_sets(func: Any, cpu: CpuShape) -> list[Knobs]:
    """The knob settings worth timing for `func`, best-ranked first; [] where neither
    reduction_tile nor conv_depthwise applies."""
    dims = _dims(func)
    if dims is None:
        return _chain_knob_sets(func, cpu)
    n_s, height, width, channels, red, group = dims
    group = vector_run(group, cpu)  # a grouped conv's tiles, as the rule's, within a group
    walks = [("rows", width)]
    if n_s == 4 and red and height > 1:
        walks.append(("map", height * width))
    out = []
    for walk, length in walks:
        v, shapes = candidates(length, channels, _unlimited(cpu), red, group=group)
        ok = [(wi, u) for wi, u in shapes if wi * u >= MIN_ACCUMULATORS and (
            length % wi == 0 or walk == "rows" or channels // (u * v) >= MAP_MIN_TILES)]
        ok.sort(key=lambda s: _rank(length, *s, v, red, cpu))
        out += [Knobs(tile=s, walk=walk, k_block=walk == "rows") for s in ok[:PER_WALK]]
    if n_s == 4 and red:
        out += [Knobs(walk="rows", k_block=False), Knobs(pixels_outer=True)]
    return out


def variants(func: Any, cpu: CpuShape) -> list[tuple[Knobs, Any]]:
    """(knobs, schedule) for each knob setting whose code differs from the rule's and the
    variants' before it."""
    import tvm_ffi

    found = schedule(func, cpu)
    if found is None or found[0] not in VARIED:
        return []
    rule = RULES[found[0]]
    seen = {tvm_ffi.structural_hash(found[1].mod)}
    out = []
    for knobs in knob_sets(func, cpu):
        try:
            sch = rule(func, cpu, knobs)
        except (RuntimeError, ValueError):  # a schedule primitive refused this tile
            continue
        if sch is None:
            continue
        key = tvm_ffi.structural_hash(sch.mod)
        if key not in seen:
            seen.add(key)
            out.append((knobs, sch))
    return out


def combined(func: Any, cpu: CpuShape, timed: list[tuple[Knobs, float]],
             rule_secs: float) -> list[tuple[Knobs, Any]]:
    """A chain's fastest conv tile, depthwise tile, chunk and band in one schedule, where two
    or more of them, each varied alone, beat the rule (`timed`: knobs and seconds).

    The one-knob-at-a-time variants are a first step of coordinate descent; this is the
    second. A chunk or band changes which tiles divide it: where the merged knobs do not fit,
    those two are left out.
    """
    best: dict[str, Knobs] = {}
    for knobs, secs in sorted(timed, key=lambda p: p[1]):
        if knobs.walk or secs >= rule_secs:
            continue  # reduction_tile's knobs do not combine: walk and tile go together
        group = ("depthwise" if knobs.depthwise else "chunk" if knobs.chunk
                 else "band" if knobs.band else "tile")
        best.setdefault(group, knobs)
    if len(best) < 2:
        return []
    merged = Knobs(tile=best.get("tile", Knobs()).tile,
                   depthwise=best.get("depthwise", Knobs()).depthwise,
                   chunk=best.get("chunk", Knobs()).chunk, band=best.get("band", Knobs()).band)
    for knobs in (merged, Knobs(tile=merged.tile, depthwise=merged.depthwise)):
        if sum(x not in (None, 0)
               for x in (knobs.tile, knobs.depthwise, knobs.chunk, knobs.band)) < 2:
            continue
        try:
            sch = RULES["conv_depthwise"](func, cpu, knobs)
        except (RuntimeError, ValueError):
            continue
        if sch is not None:
            return [(knobs, sch)]
    return []
