"""Schedules for CPU kernels: register-tiled, vectorized, parallel — no tuning needed.

The kernels come from a channels-last graph (layout.py), so every CNN hot op is the same loop
nest: out[n, h, w, c] = epilogue(sum_R in[...] * w[..., c]) with c contiguous in the output and
in the weights. Conv (k x k and 1 x 1), depthwise/grouped conv, dense (out[0, j]) and pooling
(out[n, h, w, c] = max/sum_R in[...]) all fit it.

    parallel for (c_o, n, h, w_o):           # one output tile per iteration; c_o outermost so
        acc[w_i, c_i] = 0                     # a thread's tiles share one slice of the weights
        for R:                                # (kh, kw, c_in) or k; w_i x c_i accumulators
            for w_i (unrolled), c_i (vector): acc[w_i, c_i] += in_padded[...] * w[..., c_i]
        out[...] = epilogue(acc)              # bias, activation, residual add: fused

The tile is c_i = v * u lanes (v: the target's vector length in floats, u: vectors per row) by
w_i output columns, with u * w_i accumulators kept under the register file's size; both must
divide the loop extents so no tail predicates reach the inner loop. Elementwise kernels get
fused, parallel, vectorized loops. A kernel that matches no rule keeps TVM's default schedule.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .cpu_chains import conv_depthwise

L1_WEIGHTS = 24 * 1024  # bytes of a tile's weights kept in a 32 KiB L1 beside its inputs


@dataclass(frozen=True)
class CpuShape:
    """What a schedule needs to know about the target CPU."""

    lanes: int  # 32-bit lanes per SIMD register
    registers: int  # SIMD registers usable for accumulators


def cpu_shape(tvm_target: Any) -> CpuShape:
    """SIMD width and accumulator budget of the target's CPU, from its features.

    Not llvm_get_vector_width: in TVM 0.27 it answers 512 for every x86-64 mcpu (znver3 and
    haswell included), and tiles sized for 32 zmm registers ran MobileNetV2 1.9x slower than
    ORT on an AVX2-only Zen 3 (the accumulators spilled to the stack).
    """
    from tvm.target.codegen import target_has_features

    triple = str(tvm_target.attrs.get("mtriple", ""))
    if triple.startswith("x86_64"):
        bits = (512 if target_has_features("avx512f", tvm_target)
                else 256 if target_has_features("avx", tvm_target) else 128)
    else:  # NEON (AArch64, ARMv7), RISC-V without V: 128-bit registers or none
        bits = 128
    # AVX-512 and AArch64 have 32 vector registers, AVX2/SSE/ARMv7 16; leave room for operands.
    wide = bits >= 512 or triple.startswith("aarch64")
    return CpuShape(lanes=bits // 32, registers=24 if wide else 12)


def _extent(sch: Any, loop: Any) -> int | None:
    from tvm import tirx

    ext = sch.get(loop).extent
    return int(ext.value) if isinstance(ext, tirx.IntImm) else None


def _tile(width: int, channels: int, cpu: CpuShape, reduction: int = 0) -> tuple[int, int, int]:
    """(w_i, v, u): output columns, vector length and vectors per column of one register tile.

    Candidates keep their accumulators (w_i * u) in the register budget and under 1 KiB: TVM
    keeps only smaller scratch buffers on the stack, where LLVM can promote them to registers;
    bigger ones become one heap allocation per tile. With `reduction` (the length of a conv's
    or dense's sum, whose input is broadcast across channels), in order of preference: at
    least 8 accumulators (fewer, and FMA latency sets the pace); the tile's weights (u * v
    channels x `reduction`) in L1; among those, the fewest loads per FMA ((w_i + u) loads
    per w_i * u FMAs); then the most accumulators. Counting accumulators alone gave
    MobileNetV2's 7x7 160->960 conv a 1 x 240 tile, 150 KiB of weights re-read from L2 for
    each output column, at half the speed of a 7 x 32 tile. Where no tile's weights fit
    (ResNet's 3x3 convs) the most accumulators win, as they do without `reduction`
    (depthwise, pooling: nothing is broadcast).
    """
    v = next((n for n in (cpu.lanes, cpu.lanes // 2, 4) if n >= 4 and channels % n == 0), 1)

    def cost(wi: int, u: int) -> tuple[bool, bool, float, int]:
        if not reduction:
            return (False, False, 0.0, -wi * u)
        fits = u * v * reduction * 4 <= L1_WEIGHTS
        loads = (wi + u) / (wi * u) if fits else 0.0
        # under 8 accumulators the FMA latency, not the loads, sets the pace
        return (wi * u < 8, not fits, loads, -wi * u)

    best = (1, v, 1)
    for u in range(1, cpu.registers + 1):
        if (channels // v) % u:
            continue
        for wi in range(min(width, cpu.registers // u), 0, -1):
            if width % wi == 0 and wi * u * v * 4 < 1024:
                if cost(wi, u) < cost(best[0], best[2]):
                    best = (wi, v, u)
                break
    return best


def _vectorize_inner(sch: Any, block: Any, lanes: int) -> None:
    loops = sch.get_loops(block)
    if not loops:
        return
    ext = _extent(sch, loops[-1])
    if ext is None or ext < 2:
        return
    v = next((n for n in (lanes, lanes // 2, 4) if n >= 2 and ext % n == 0), 0)
    if not v:
        return
    if ext > v:
        _, inner = sch.split(loops[-1], factors=[None, v])
        sch.vectorize(inner)
    else:
        sch.vectorize(loops[-1])


def top_blocks(sch: Any) -> list[tuple[Any, str]]:
    """The top-level blocks of a kernel with their iterator kinds ('S' spatial, 'R' reduction)."""
    from tvm import tirx
    from tvm.s_tir.dlight.analysis import get_root_block

    kind = {tirx.IterVar.DataPar: "S", tirx.IterVar.CommReduce: "R"}
    return [(b, "".join(kind.get(iv.iter_type, "O") for iv in sch.get(b).iter_vars))
            for b in sch.get_child_blocks(get_root_block(sch))]


def _pack_weights(sch: Any, func: Any, block: Any, tile: int, channels: int) -> None:
    """Read a constant weight W[..., c] as W'[c // tile, ..., c % tile] (conv: [kh, kw, c_in, c];
    dense: [k, c]).

    A tile's weights are then one contiguous run instead of `tile` floats every `channels`:
    ResNet-18's 512-channel 3x3 conv went from 172 to 224 GFLOP/s. The repacking block is
    marked as layout-rewrite preprocessing, which the pipeline splits out of the kernel and
    folds into the constant at compile time (SplitLayoutRewritePreproc, FoldConstant).
    """
    from tvm.tirx import IndexMap

    free = func.attrs.get("layout_free_buffers") if func.attrs else None
    if not free or channels <= tile or channels % tile:
        return
    params = [func.params[int(i)] for i in free]
    for idx, region in enumerate(sch.get(block).reads):
        buf = region.source
        if any(buf.same_as(p) for p in params) and len(buf.shape) >= 2 \
                and int(buf.shape[-1]) == channels:
            cached = sch.cache_read(block, idx, "global")
            sch.transform_layout(block, ("read", idx), IndexMap.from_func(
                lambda *i: (i[-1] // tile, *i[:-1], i[-1] % tile), ndim=len(buf.shape)))
            sch.annotate(cached, "meta_schedule.layout_rewrite_preproc", True)
            return


def _channelwise(block: Any, n_s: int) -> bool:
    """Depthwise conv or pooling: every read follows the output channel (none is broadcast)."""
    from tvm.tirx.analysis import undefined_vars

    channel = block.iter_vars[n_s - 1].var
    return all(any(v.same_as(channel) for v in undefined_vars(r.region[-1].min, []))
               for r in block.reads)


def spatial_prefix(kinds: str) -> int:
    """n_s for an S..SR..R block (n_s spatial iterators, then only reductions), else 0."""
    n_s = len(kinds) - len(kinds.lstrip("S"))
    return n_s if n_s < len(kinds) and set(kinds[n_s:]) == {"R"} else 0


def reduction_length(sch: Any, block: Any, n_s: int) -> int:
    """Terms in each output's sum where the input is broadcast across output channels (conv,
    dense); 0 for depthwise conv and pooling, whose reads all follow the output channel."""
    if _channelwise(sch.get(block), n_s):
        return 0
    length = 1
    for loop in sch.get_loops(block)[-len(sch.get(block).iter_vars) + n_s:]:
        length *= _extent(sch, loop) or 1
    return length


def register_tile(sch: Any, block: Any, n_s: int, wi: int, u: int, v: int,
                  chunk: int = 0) -> tuple[list[Any], Any]:
    """Reorder an S..SR..R block (its last n_s + reduction loops) into outer loops, then the
    reduction, then a w_i x (u x v) register tile: w_i and u unrolled, v vectorized.
    Returns the outer loops [c_o, *spatial, w_o] (with `chunk`, channels a multiple of u * v:
    [c_chunk, *spatial, w_o, c_o], a chunk's channels innermost) and the first reduction loop,
    where the accumulators' init is split out once the epilogue is in place.
    """
    loops = sch.get_loops(block)
    loops = loops[len(loops) - len(sch.get(block).iter_vars):]
    w_o, w_i = sch.split(loops[n_s - 2], factors=[None, wi])
    if chunk:
        c_k, c_o, c_u, c_v = sch.split(loops[n_s - 1], factors=[None, chunk // (u * v), u, v])
        outer = [c_k, *loops[: n_s - 2], w_o, c_o]
    else:
        c_o, c_u, c_v = sch.split(loops[n_s - 1], factors=[None, u, v])
        outer = [c_o, *loops[: n_s - 2], w_o]
    sch.reorder(*outer, *loops[n_s:], w_i, c_u, c_v)
    if v > 1:
        sch.vectorize(c_v)
    sch.unroll(c_u)
    sch.unroll(w_i)
    return outer, loops[n_s]


def _k_block(c_in: int, tile: int, reduction: int) -> int:
    """Input channels per reduction block of a 1x1 conv whose tile's weights outgrow L1, or 0.

    With the reduction split and its outer part above the tile loop, one block of the tile's
    weights stays in L1 for every pixel of a row instead of streaming from L2 per pixel; the
    accumulators are reloaded once per block. On AVX2 (Zen 3, 12 accumulators: MobileNetV2's
    14x14 and 7x7 1x1 convs keep 1-2 pixel tiles of 48-96 channels) it took MobileNetV2
    from 1.13x to 1.01x ORT. Not for k x k convs: ResNet-18 went from 1.79x to 2.12x.
    """
    if not reduction or reduction != c_in or tile * reduction * 4 <= L1_WEIGHTS:
        return 0
    kb = max((d for d in range(1, c_in) if c_in % d == 0 and d * tile * 4 <= L1_WEIGHTS),
             default=0)
    return kb if kb >= 16 else 0


def reduction_tile(func: Any, cpu: CpuShape) -> Any | None:
    """Conv, depthwise, dense, pooling: one S..SR..R block with injective prologue/epilogue."""
    from tvm import s_tir

    sch = s_tir.Schedule(func)
    blocks = top_blocks(sch)
    reds = [i for i, (_, kinds) in enumerate(blocks) if set(kinds) != {"S"}]
    if len(reds) != 1:
        return None
    block, kinds = blocks[reds[0]]
    n_s = spatial_prefix(kinds)
    if n_s < 2:
        return None
    before = [b for b, _ in blocks[: reds[0]]]
    after = [b for b, _ in blocks[reds[0] + 1:]]
    for b in after[:-1]:
        sch.compute_inline(b)
    # Padding is read in place (a bounds check per load), measured faster on MobileNetV2 than
    # a padded copy per tile (3-row halo recomputed) or one whole padded tensor per call.
    for b in before:
        sch.compute_inline(b)
    loops = sch.get_loops(block)
    if len(loops) != len(kinds):
        return None
    width, channels = _extent(sch, loops[n_s - 2]), _extent(sch, loops[n_s - 1])
    if width is None or channels is None:
        return None
    red = reduction_length(sch, block, n_s)
    wi, v, u = _tile(width, channels, cpu, red)
    _pack_weights(sch, func, block, u * v, channels)
    # c_o outermost: consecutive tiles of a thread reuse one slice of the weights from cache.
    outer, reduction = register_tile(sch, block, n_s, wi, u, v)
    r_loops = sch.get_loops(block)[len(outer): len(outer) + len(kinds) - n_s]
    kb = _k_block(_extent(sch, r_loops[-1]) or 0, u * v, red) if n_s == 4 else 0
    if kb:
        r_o, r_i = sch.split(r_loops[-1], factors=[None, kb])
        sch.reorder(*outer[:-1], r_o, outer[-1], *r_loops[:-1], r_i)
        outer, reduction = outer[:-1], r_o
    tile = sch.fuse(*outer)
    sch.parallel(tile)
    if after:
        sch.reverse_compute_at(after[-1], tile, preserve_unit_loops=True)
        _vectorize_inner(sch, after[-1], v)
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
    loops = sch.get_loops(block)
    if not loops:
        return None
    inner = _extent(sch, loops[-1]) or 0
    outer = loops[:-1] if inner >= 4 and len(loops) > 1 else loops
    fused = sch.fuse(*outer) if len(outer) > 1 else outer[0]
    sch.parallel(fused)
    if len(outer) < len(loops):
        _vectorize_inner(sch, block, cpu.lanes)
    return sch


RULES = {"conv_depthwise": conv_depthwise, "reduction_tile": reduction_tile,
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
    import tvm
    from tvm import tirx

    cpu = cpu_shape(tvm_target)

    @tvm.transform.module_pass(opt_level=0, name="EdgecCpuSchedules")
    def apply(mod: Any, _ctx: Any) -> Any:
        done = {}
        for gv, func in mod.functions_items():
            if not isinstance(func, tirx.PrimFunc) or func.attrs.get("tirx.is_scheduled"):
                continue
            found = schedule(func, cpu)
            kernels[gv.name_hint] = found[0] if found else "unscheduled"
            if found:
                done[gv] = found[1].mod["main"].with_attr("tirx.is_scheduled", True)
        for gv, func in done.items():
            mod[gv] = func
        return mod

    return apply
