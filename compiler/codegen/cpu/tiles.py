"""Which register tile a CPU kernel gets: the target's SIMD shape and the tile's cost.

A tile is w_i output columns x u vectors of v channels (cpu/schedules.py): w_i * u
accumulators, and per reduction step w_i broadcast inputs and u weight vectors. The choice
weighs, in order: enough accumulators to hide the FMA latency (CpuShape.in_flight, the CPU
model's FMA latency x pipes: 8 on x86); the registers the tile keeps live; the tile's weights
in L1 (CpuShape.l1_weights); loads per FMA ((w_i + u) / (w_i u)). Where no tile that divides
the row reaches `in_flight` accumulators (13-wide maps: only 1 and 13 divide), a row may end in
a narrower tail tile (schedules partitions the row). The CPU facts are data (cpu/shape.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from edgec.compiler.codegen.cpu.shape import (  # noqa: F401 (re-exported)
    FMA_IN_FLIGHT,
    L1_WEIGHTS,
    L2_WEIGHTS,
    CpuShape,
    cpu_shape,
)
from edgec.compiler.codegen.tir_level.stack_scratch import STACK_BYTES

POOL_VECTORS = 8  # vectors of a pooling tile (pool_tile)
TAIL_GAIN = 0.1  # share of busy FMA slots a row's tail tile must add to be worth its code
# A 1x1 conv's reduction length from which its tile is chosen by loads per FMA (tile(...,
# pointwise=True)). Below, a tile's fixed costs (zeroing, storing and the epilogue of 12
# accumulators, a tail's loop nest) outweigh the loads saved: single-thread, MobileNetV2's
# 112x112 32 -> 16 conv ran 24% and SqueezeNet's 27x27 32 -> 128 12% slower with 6 x 2.
POINTWISE_MIN = 64
# Bytes of a pointwise tile's weight vector that cost as much as one broadcast input: the
# weights stream from L2 (see tile_cost), the inputs sit in L1.
STREAMED_BYTES = 32


@dataclass(frozen=True)
class Knobs:
    """Choices a rule otherwise makes by the cost model below, fixed (edgec tune tries them)."""

    tile: tuple[int, int] | None = None  # (w_i, u) register tile (of a chain: its conv's)
    walk: str = ""  # "rows", "map" (cpu/pixels.py), or "": the rule's choice
    k_block: bool = True  # 1x1 convs: block the reduction where k_block() says so
    depthwise: tuple[int, int] | None = None  # a conv -> depthwise chain's depthwise tile
    chunk: int = 0  # ... and its channels per chunk (cpu/chains.py); 0: the rule's
    band: int = 0  # ... and its depthwise output rows per band; 0: the rule's, -1: the map
    pixels_outer: bool = False  # a conv's parallel loop over pixel tiles, then channel tiles


RULE = Knobs()


def vector_run(period: int, cpu: CpuShape) -> int:
    """`period` (loops.channel_period: output channels that read their inputs as one run, a
    grouped conv's group or an input tiled along its channels) where a vector of the CPU's
    divides it, else 0. A tile kept within such a run (tile(..., group=)) loads one broadcast
    input, or one contiguous vector, per vector of channels instead of a gather: a 16 x 16
    map, 64 -> 40 channels in 8 groups of 5, ran at 17 GF/s with 8-lane vectors across
    groups; 64 -> 64 in 4 groups of 16, one group per tile, at 340-410 (AVX-512, 2 threads;
    onnx_level/group_channels pads groups of 5 to a vector)."""
    return period if period and vector_length(period, cpu.lanes) else 0


def vector_length(channels: int, lanes: int) -> int:
    """The vector a tile over `channels` takes: the widest of the lanes, half of them and 4
    that divides them; 0 where none does."""
    return next((n for n in (lanes, lanes // 2, 4) if n >= 4 and channels % n == 0), 0)


def tile(width: int, channels: int, cpu: CpuShape, reduction: int = 0,
         tails: bool = False, pointwise: bool = False, group: int = 0) -> tuple[int, int, int]:
    """(w_i, v, u): output columns, vector length and vectors per column of one register tile.

    Candidates keep their accumulators (w_i * u) in the register budget and STACK_BYTES (see
    candidates). With `reduction` (the length of a conv's or dense's sum, whose input is
    broadcast across channels), in order of preference: at least `cpu.in_flight` accumulators
    (fewer, and FMA latency sets the pace); the tile's weights (u * v channels x `reduction`)
    in L1; among those, the fewest loads per FMA ((w_i + u) loads
    per w_i * u FMAs); then the most accumulators. Counting accumulators alone gave
    MobileNetV2's 7x7 160->960 conv a 1 x 240 tile, 150 KiB of weights re-read from L2 for
    each output column, at half the speed of a 7 x 32 tile. Where no tile's weights fit
    (ResNet's 3x3 convs) they stream from L2 and count as a pointwise conv's do (tile_cost).
    Without `reduction` (depthwise, pooling: nothing is broadcast) the most accumulators
    win, except on a `cpu.live` CPU, where a depthwise tile keeps at most 8 and is ranked by
    depthwise_cost, and on a `cpu.columns` one (AVX-512, Cortex-A72, A76): the most columns
    (tile_cost).

    With `cpu.live` (AVX2), a broadcast tile also keeps its w_i broadcast inputs and u weight
    vectors in registers beside the accumulators: past 16, LLVM spills an accumulator to the
    stack in the inner loop, and an 8 x 1 tile of ResNet-18's 56x56 3x3 conv ran at 70 GFLOP/s
    where 4 x 2 (8 + 4 + 2 registers) ran at 128; 1 x 8 tiles of its 7x7 convs ran at 50-70
    where 7 x 1 ran at 140.

    With `tails`, a broadcast tile that need not divide the row is taken where it keeps
    TAIL_GAIN more of the row's FMA slots busy than the best dividing tile (see busy):
    SqueezeNet's 13x13 64->256 3x3 conv went from 26 GFLOP/s (1 x 4) to 120 (2 x 4 and a
    1 x 4 tail), its 13x13 512->1000 1x1 conv from 26 (1 x 5) to 103 (7 x 1, a 6 x 1 tail).

    `pointwise` (a 1x1 conv or a GEMM on a `cpu.pointwise` CPU): see candidates and tile_cost.
    `group` (vector_run): the channels a tile stays within, see candidates.
    """
    pointwise = pointwise and cpu.pointwise
    v, shapes = candidates(width, channels, cpu, reduction, pointwise, group)

    def cost(wi: int, u: int) -> tuple[bool, bool, float, int]:
        return tile_cost(wi, u, v, reduction, pointwise, live=bool(cpu.live),
                         columns=cpu.columns, in_flight=cpu.in_flight,
                         l1_weights=cpu.l1_weights)

    if tails and pointwise:
        # Loads per FMA before busy slots, a tail allowed: SqueezeNet's 13x13 classifier ran
        # 26% faster with 2 x 5 (0.7 loads per FMA, a 1 x 5 tail) than with 7 x 1 (1.14), and
        # a 27x27 squeeze conv (128 -> 32) 38% slower with 9 x 1 (1.11) than with 2 x 4.
        # The loads are the row's, its tail tile's included: over MobileNetV2's 7x7 maps
        # 8 x 3 and a 1 x 3 tail load as much as 7 x 3 (AVX-512), which ran its 960-channel
        # conv -> depthwise chain in 0.86 of the time.
        def rank(s: tuple[int, int]) -> tuple[Any, ...]:
            few, _, loads, more = cost(*s)
            tail = width % s[0]
            if tail:
                loads = ((width - tail) * loads + tail * cost(tail, s[1])[2]) / width
            return few, round(loads, 2), -round(busy(width, *s, cpu.in_flight), 2), more

        wi, u = min(shapes, key=rank)
        return wi, v, u
    best = (1, v, 1)
    for u in sorted({u for _, u in shapes}):
        wi = next((wi for wi, uu in shapes if uu == u and width % wi == 0), 0)
        if wi and cost(wi, u) < cost(best[0], best[2]):
            best = (wi, v, u)
    if tails and reduction and best[0] * best[2] < cpu.in_flight:
        # A tail costs a second copy of the loop nest and its narrow tile: taken only for a
        # clear gain. ResNet-18's 7x7 convs keep 7 x 1 per row (0.875 busy, 146 GFLOP/s):
        # 2 x 4 with a 1 x 4 tail (0.93) ran at 118, 4 x 2 with a 3 x 2 tail (0.89) at 141.
        # Tiles whose weights stay in L2 first: 2 x 4 there is 590 KiB of weights per tile.
        wi, u = min(shapes, key=lambda s: (s[1] * v * reduction * 4 > cpu.l2_weights,
                                           -round(busy(width, *s, cpu.in_flight), 6), cost(*s)))
        if busy(width, wi, u, cpu.in_flight) \
                >= busy(width, best[0], best[2], cpu.in_flight) + TAIL_GAIN:
            best = (wi, v, u)
    return best


def candidates(width: int, channels: int, cpu: CpuShape, reduction: int = 0,
               pointwise: bool = False, group: int = 0) -> tuple[int, list[tuple[int, int]]]:
    """(v, [(w_i, u), ...]): the vector length and every register tile the CPU can hold.

    Accumulators (w_i * u) within the register budget and STACK_BYTES: the scratch buffer a tile
    sums into stays on the stack (tir_level/stack_scratch.py), where LLVM promotes it to registers.
    On AVX-512 that admits tiles of 16-24 accumulators, which TVM's own 1 KiB limit excluded: 6 x 4
    ran ResNet-18's four Winograd GEMMs 12-38% faster than 7 x 2 and 8 x 1 (Ice Lake, 2 threads,
    warm). With `cpu.live` and a broadcast input, within `live` registers with the operands LLVM
    keeps live: in a k x k conv's unrolled loop all w_i broadcast inputs and u weight vectors (it
    hoists the broadcasts; an 8 x 1 tile spilled); in a `pointwise` (1x1) conv's, the u weight
    vectors and one broadcast, each issued just before its u FMAs (the asm of a 6 x 2 tile: 12
    accumulators, 2 weights, 1 broadcast, no spill). Not for u = 1: there LLVM unrolls the reduction
    by two and hoists the second step's broadcasts, as in a k x k conv; an 8 x 1 tile of
    ShuffleNetV2's 7x7 232 -> 232 conv spilled an accumulator (a store and reload in its dependency
    chain each step) and ran 1.8x slower than 7 x 1.

    With `group` (a divisor of the channels), a tile's u * v channels divide it: each vector,
    and each tile, reads the inputs of one group (grouped conv), whose broadcasts the tile's
    vectors share as tile_cost counts (a 16x16 map, 64 -> 64 in 4 groups of 16: 8 x 2 tiles
    across two groups 23.4 us, 16 x 1 within one 21.8; AVX-512, 2 threads).
    """
    unit = group or channels
    v = vector_length(unit, cpu.lanes) or 1

    def allowed(wi: int, u: int) -> bool:
        operands = u + 1 if pointwise and u > 1 else wi + u
        live = reduction and cpu.live and wi * u + operands > cpu.live
        spills = not reduction and cpu.live and wi * u > cpu.in_flight  # see depthwise_cost
        return wi * u * v * 4 <= STACK_BYTES and not live and not spills

    return v, [(wi, u) for u in range(1, cpu.registers + 1) if (unit // v) % u == 0
               for wi in range(min(width, cpu.registers // u), 0, -1) if allowed(wi, u)]


def tile_cost(wi: int, u: int, v: int, reduction: int, pointwise: bool = False,
              live: bool = False, columns: bool = False, in_flight: int = FMA_IN_FLIGHT,
              l1_weights: int = L1_WEIGHTS) -> tuple[bool, bool, float, int]:
    """tile()'s order of preference, lowest first: under `in_flight` accumulators (the CPU's
    FMA latency x pipes), weights outside L1 (over `l1_weights` bytes),
    loads per FMA, fewer accumulators. Without `reduction` (depthwise), the most accumulators;
    on a `live` CPU (AVX2) depthwise_cost, then the fewest registers; with `columns`
    (AVX-512, Cortex-A72, A76) the most columns, then the fewest accumulators.

    Weights outside L1 (a k x k conv's tile over many input channels) stream from L2 like a
    pointwise conv's, and are counted alike. On AVX2 (12 accumulators, 16 live registers) the
    fewest loads are the most accumulators there, as the rule was first written; on AVX-512
    (24 accumulators) the most-accumulators rule gave ResNet-18's 7x7 3x3 convs 1 x 16 tiles
    (16 weight vectors per broadcast; the model ran 1.3x the time of counting loads).

    A `pointwise` conv's tile is judged by loads per FMA wherever its weights are: walking
    the whole map (pixels) it streams them from L2, and 12-accumulator tiles that do so
    (6 x 2, 4 x 3) ran MobileNetV2's 7x7 and 14x14 1x1 convs 8-30% faster single-thread than
    the 7 x 1 and 1 x 6 tiles that kept a K-block's weights in L1. A weight vector, streamed,
    counts as one broadcast per STREAMED_BYTES: one on AVX2 (as measured there), two on
    AVX-512, where 7 x 2 ran MobileNetV2's 7x7 960 -> 160 and 14x14 192 -> 64 convs 16% and
    24% faster than 3 x 5 and 3 x 4 (Ice Lake, 2 threads, warm), the tiles with the fewest
    loads counted alike: each of their steps streams 320 or 256 bytes of weights, 7 x 2's 128
    for almost as many FMAs."""
    if not reduction and columns:
        # Each FMA loads its own input vector whatever the tile; a weight vector serves w_i
        # of them, and more vectors per column only add registers: on AVX-512 14 x 1 and
        # 7 x 1 ran MobileNetV2's 14x14 and 7x7 conv -> depthwise chains in 0.81 and 0.88 of
        # the time of the most accumulators' 7 x 3 (Ice Lake, 2 threads, warm).
        return (False, False, 1 / wi, wi * u)
    if not reduction:
        return (False, False, depthwise_cost(wi, u), wi * u + u) if live \
            else (False, False, 0.0, -wi * u)
    fits = u * v * reduction * 4 <= l1_weights
    weight = 1.0 if fits and not pointwise else max(1.0, v * 4 / STREAMED_BYTES)
    loads = (wi + weight * u) / (wi * u)
    # under `in_flight` accumulators the FMA latency, not the loads, sets the pace
    return (wi * u < in_flight, not (fits or pointwise), loads, -wi * u)


def depthwise_cost(wi: int, u: int) -> float:
    """Overhead per FMA of a w_i x u depthwise tile on AVX2, lower first: one input load per
    FMA, a weight vector load per w_i FMAs, and a padding check per column and step (per u
    FMAs), counted as half a load. Tiles of more than 8 accumulators are not candidates: with
    the u weights and the inputs beside them they outgrow 16 registers, and the branches of the
    padding checks then spill accumulators in the inner loop. Single thread, MobileNetV2's
    depthwise convs: the 4 x 3 tile of the most-accumulators rule ran its 56x56x144 one in
    243 us, 4 x 2 in 138, 8 x 1 in 174, 2 x 2 in 191; 112x112x32: 200 (4 x 4), 131 (4 x 2);
    7x7x960: 23 (1 x 12), 16 (7 x 1)."""
    return 1 + 1 / wi + 0.5 / u


def pointwise_conv(cpu: CpuShape, reduction: int, c_in: int) -> bool:
    """Whether a conv's tile is judged by loads per FMA (tile(..., pointwise=True)): a 1x1 conv
    or a (batched) GEMM (its reduction is its input channels) of at least POINTWISE_MIN, on a
    `cpu.pointwise` CPU (x86; Cortex-A72 and A76, where the ARM proxy counted MobileNetV2 7% and
    MobileNetV1 17% fewer instructions: targets/cpu/models.toml). On AVX-512 the
    most-accumulators rule gave MobileNetV2's 14x14 576 -> 96 conv a 14 x 1 tile (a broadcast
    load per FMA) that ran 1.5x as long as 4 x 3 (Ice Lake, warm), and ResNet-18's 7x7
    Winograd GEMM (16 tiles, 512 -> 512) 16 x 1."""
    return cpu.pointwise and reduction == c_in and reduction >= POINTWISE_MIN


def pool_tile(channels: int, v: int) -> tuple[int, int]:
    """(w_i, u) of a pooling kernel: one pixel of up to POOL_VECTORS vectors, not tile()'s
    most accumulators. Single thread: ResNet-18's 3x3/2 max pool over 64 channels ran 271 us
    with 8 pixels x 1 vector and 71 us with 1 x 8; SqueezeNet's 180 -> 79 us (64 channels) and
    75 -> 64 us (128), ShuffleNetV2's (24 channels: 1 x 3) 51 -> 40 us."""
    return 1, max(d for d in range(1, POOL_VECTORS + 1) if (channels // v) % d == 0)


def busy(width: int, wi: int, u: int, in_flight: int = FMA_IN_FLIGHT) -> float:
    """The share of FMA issue slots a row of `width` columns keeps busy with w_i x u tiles and
    a tail tile of the remaining columns, each tile at min(accumulators / in_flight, 1)."""
    full, tail = width - width % wi, width % wi
    return (full * min(wi * u / in_flight, 1.0) + tail * min(tail * u / in_flight, 1.0)) / width


def k_block(c_in: int, tile_channels: int, reduction: int, l1_weights: int = L1_WEIGHTS) -> int:
    """Input channels per reduction block of a 1x1 conv whose tile's weights outgrow L1
    (`l1_weights` bytes), or 0.

    With the reduction split and its outer part above the tile loop, one block of the tile's
    weights stays in L1 for every pixel of a row instead of streaming from L2 per pixel; the
    accumulators are reloaded once per block. On AVX2 (Zen 3, 12 accumulators: MobileNetV2's
    14x14 and 7x7 1x1 convs keep 1-2 pixel tiles of 48-96 channels) it took MobileNetV2
    from 1.13x to 1.01x ORT. Not for k x k convs: ResNet-18 went from 1.79x to 2.12x.
    """
    if not reduction or reduction != c_in or tile_channels * reduction * 4 <= l1_weights:
        return 0
    kb = max((d for d in range(1, c_in) if c_in % d == 0 and d * tile_channels * 4 <= l1_weights),
             default=0)
    return kb if kb >= 16 else 0
