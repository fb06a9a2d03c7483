"""Schedule for int8 conv kernels (relax_level/int8.py): the target's int8 dot product.

An int8 conv (NHWC, HWIO, int32 sums) is out[n, p, c] = sum_{kh, kw, ci} x[n, .., ci] *
w[kh, kw, ci, c] with p the output pixel. The CPU's dot-product instruction (cpu/models.toml
`int8_dot`, a TVM tensor intrinsic) adds to each of L int32 lanes the sum of 4 products: 4
consecutive input channels of one pixel (one 32-bit word, broadcast) times 4 weights of that
lane's output channel (vpdpbusd: L = 16, or 8 in its 256-bit form where 16 does not divide the
channels, u8 x s8; sdot: L = 4, s8 x s8). So:

    parallel for (c_o, n, p_o):                 # one tile: p_i pixels x u * L channels
        acc[p_i, c_u, 0:L] = 0
        for kh, kw, ci_o:                        # ci = 4 ci_o + ci_i
            for p_i (unrolled), c_u (unrolled):
                acc[p_i, c_u, :] = dot(acc, x[n, p, 4 ci_o : 4 ci_o + 4], w'[c, kh, kw, ci_o, :, :])
        out[...] = epilogue(acc)                 # (float(acc - zero-point term)) * scale + bias,
                                                 # the next layer's quantize: fused

with the constant weights repacked at compile time as w'[c // L, kh, kw, ci // 4, c % L, ci % 4]
(the pipeline's prepack phase folds the layout rewrite into the constant). The pixels of a
tile are a divisor of the row (at most MAX_PIXELS), so no row needs a tail. A conv that pads
with zeros itself (relax_level/int8.py: a zero point of 0) reads a padded copy of its input,
made once per call, row-parallel: the dot product loads 4 channels as one word, in bounds.
A dense (out[m, c] = sum_ci x[m, ci] w[ci, c]: int8 MatMul/Gemm heads) is the same nest
without the taps, its rows as the pixels.

Depthwise int8 convs (no reduction over input channels) and kernels the dot product cannot
take (channels no form's L divides, reduction not a multiple of 4, no `int8_dot` on the CPU)
get the fp32 rule's register tile on int32 lanes (schedules.reduction_tile), reading a padded
copy of their input made once per call: in place, each bounds-checked load of a byte vector
became a gather. A depthwise conv's tile walks pixel tiles outermost and unrolls its taps.
"""

from __future__ import annotations

import math
from typing import Any

from edgec.compiler.codegen.cpu.loops import (
    extent,
    fusable_epilogue,
    pads,
    reduction_length,
    spatial_prefix,
    top_blocks,
    vectorize_inner,
)
from edgec.compiler.codegen.cpu.tiles import RULE, CpuShape, Knobs

MAX_PIXELS = 8  # pixels per register tile
# a depthwise conv's walk on int32 lanes: a thread's consecutive tiles are the channel vectors
# of one pixel tile, so each cache line of the input is read once (channels outermost, it read
# its input once per vector of channels, 16 of each line's 64 bytes at a time); the other
# kernels on int32 lanes (no dot product) keep channels outermost, for weight reuse
DEPTHWISE = Knobs(pixels_outer=True)
MAX_TAPS = 25  # the int32-lane tile's taps unrolled up to this many (a 5x5 kernel)
STEP = 4  # input channels per dot product


def vectorizable_rounding() -> None:
    """Let TVM's loop vectorizer take `nearbyint` (round half to even: the quantize of
    qdq_elementwise.py, in every int8 epilogue) as a vector op, as it takes `round`; without
    the op attribute it scalarizes the whole loop and LLVM rebuilds it (gathers and one byte
    stored at a time for a depthwise conv's epilogue). LLVM lowers the vector op to one
    instruction (vrndscaleps, frinti) in the default rounding mode, half to even."""
    import tvm

    op = tvm.ir.Op.get("tirx.nearbyint")
    if not op.get_attr("TVectorizable"):
        tvm.ir.register_op_attr("tirx.nearbyint", "TVectorizable", True)


vectorizable_rounding()  # any process that schedules int8 kernels imports this module


def int8_reduction(func: Any) -> bool:
    """The kernel's reduction multiplies int8/uint8 operands (an int8 conv or dense)."""
    from tvm import s_tir

    sch = s_tir.Schedule(func)
    blocks = [b for b, kinds in top_blocks(sch) if set(kinds) != {"S"}]
    return any(str(r.source.dtype) in ("int8", "uint8") for b in blocks for r in sch.get(b).reads)


# instruction (cpu/models.toml `int8_dot`) -> LLVM intrinsic, int32 lanes, activation dtype;
# the first form is the widest, the next ones take channel counts it does not divide
INSTRUCTIONS = {
    "vpdpbusd": [("llvm.x86.avx512.vpdpbusd.512", 16, "uint8"),
                 ("llvm.x86.avx512.vpdpbusd.256", 8, "uint8")],  # AVX512-VL, 24 channels
    "sdot": [("llvm.aarch64.neon.sdot.v4i32.v16i8", 4, "int8")],
}


def dot_lanes(instruction: str, channels: int) -> int | None:
    """The widest L of `instruction`'s forms that divides `channels`, else None."""
    return next((lanes for _, lanes, _ in INSTRUCTIONS[instruction] if channels % lanes == 0),
                None)


def dot_intrinsic(instruction: str, lanes: int | None = None) -> tuple[str, int]:
    """(name, L) of the TVM tensor intrinsic for `instruction` on L lanes (default: its widest
    form), registered on first use: C[i] += sum_k int32(A[k]) * int32(B[i, k]) for i < L,
    k < 4, as one instruction."""
    from tvm.s_tir import TensorIntrin

    forms = INSTRUCTIONS[instruction]
    llvm, lanes, a_dtype = next(f for f in forms if lanes in (None, f[1]))
    name = f"edgec_dot_{instruction}" + ("" if lanes == forms[0][1] else f"_{lanes}")
    try:
        TensorIntrin.get(name)
    except (ValueError, RuntimeError):  # not registered yet
        TensorIntrin.register(name, *_dot_functions(llvm, lanes, a_dtype))
    return name, lanes


def _dot_functions(llvm: str, lanes: int, a_dtype: str) -> tuple[Any, Any]:
    """The description and the implementation of a 4-wide dot product into L int32 lanes."""
    from tvm.script import tirx as T

    @T.prim_func(s_tir=True)
    def desc(a: T.handle, b: T.handle, c: T.handle) -> None:
        A = T.match_buffer(a, (STEP,), a_dtype, offset_factor=1)
        B = T.match_buffer(b, (lanes, STEP), "int8", offset_factor=1)
        C = T.match_buffer(c, (lanes,), "int32", offset_factor=1)
        with T.sblock("root"):
            T.reads(C[0:lanes], A[0:STEP], B[0:lanes, 0:STEP])
            T.writes(C[0:lanes])
            for i, k in T.grid(lanes, STEP):
                with T.sblock("update"):
                    vi, vk = T.axis.remap("SR", [i, k])
                    C[vi] = C[vi] + T.Cast("int32", A[vk]) * T.Cast("int32", B[vi, vk])

    @T.prim_func(s_tir=True)
    def impl(a: T.handle, b: T.handle, c: T.handle) -> None:
        A = T.match_buffer(a, (STEP,), a_dtype, offset_factor=1)
        B = T.match_buffer(b, (lanes, STEP), "int8", offset_factor=1)
        C = T.match_buffer(c, (lanes,), "int32", offset_factor=1)
        with T.sblock("root"):
            T.reads(C[0:lanes], A[0:STEP], B[0:lanes, 0:STEP])
            T.writes(C[0:lanes])
            word = T.reinterpret(A.vload([0], f"{a_dtype}x{STEP}"), dtype="int32")
            C[T.ramp(T.int32(0), 1, lanes)] = T.call_llvm_pure_intrin(
                T.llvm_lookup_intrinsic_id(llvm),
                C.vload([0], f"int32x{lanes}"),
                T.reinterpret(T.broadcast(word, lanes), dtype=f"{a_dtype}x{lanes * STEP}"),
                B.vload([0, 0], f"int8x{lanes * STEP}"),
                dtype=f"int32x{lanes}")

    return desc, impl


def _tile(pixels: int, channels: int, lanes: int, cpu: CpuShape) -> tuple[int, int]:
    """(p_i, u): pixels and vectors of L channels per tile, within the accumulator budget."""
    u = next(n for n in (2, 1) if channels % (n * lanes) == 0)
    p_i = max(d for d in range(1, MAX_PIXELS + 1)
              if pixels % d == 0 and d * u <= cpu.registers)
    return p_i, u


def _pack(sch: Any, block: Any, weight: int, lanes: int) -> None:
    """Read the weight (read `weight` of `block`: HWIO, or [K, N] for a dense) as [c // L,
    ..., ci // 4, c % L, ci % 4], a layout rewrite the pipeline folds into the constant."""
    from tvm.tirx import IndexMap

    ndim = len(sch.get(block).reads[weight].source.shape)
    cached = sch.cache_read(block, weight, "global")
    sch.transform_layout(block, ("read", weight), IndexMap.from_func(
        lambda *i: (i[-1] // lanes, *i[:-2], i[-2] // STEP, i[-1] % lanes, i[-2] % STEP),
        ndim=ndim))
    sch.annotate(cached, "meta_schedule.layout_rewrite_preproc", True)


def _weight_read(func: Any, block: Any) -> int | None:
    """Which read of the block is its constant weight ([..., c_in, c])."""
    free = func.attrs.get("layout_free_buffers") if func.attrs else None
    params = [func.params[int(i)] for i in free or []]
    return next((i for i, r in enumerate(block.reads)
                 if len(r.source.shape) >= 2 and any(r.source.same_as(p) for p in params)), None)


def _prologue(sch: Any, before: list[Any], lanes: int) -> None:
    """Blocks before the reduction inlined, but a zero-padded copy, made once per call (the
    dot product loads 4 of its channels as one word)."""
    padded = before[-1] if before and pads(sch.get(before[-1])) else None
    for b in before:
        if b is not padded:
            sch.compute_inline(b)
    if padded is not None:
        sch.parallel(sch.fuse(*sch.get_loops(padded)[:-1]))
        vectorize_inner(sch, padded, lanes)


def dot_conv(func: Any, cpu: CpuShape) -> Any | None:
    """The schedule of the module docstring for an int8 conv or dense kernel, else None."""
    from tvm import s_tir

    if not cpu.int8_dot or not int8_reduction(func):
        return None
    sch = s_tir.Schedule(func)
    blocks = top_blocks(sch)
    reds = [i for i, (_, kinds) in enumerate(blocks) if set(kinds) != {"S"}]
    if len(reds) != 1 or spatial_prefix(blocks[reds[0]][1]) < 2:
        return None
    block, n_s = blocks[reds[0]][0], spatial_prefix(blocks[reds[0]][1])
    weight = _weight_read(func, sch.get(block))
    if weight is None:
        return None
    _prologue(sch, [b for b, _ in blocks[: reds[0]]], cpu.lanes)
    after = fusable_epilogue(sch, block, [b for b, _ in blocks[reds[0] + 1:]], cpu.lanes)
    loops = sch.get_loops(block)
    *spatial, w, c = loops[:n_s]
    *taps, ci = loops[n_s:]
    width, channels, c_in = extent(sch, w), extent(sch, c), extent(sch, ci)
    lanes = dot_lanes(cpu.int8_dot, channels or 0)
    if not width or not channels or not lanes or not c_in or c_in % STEP:
        return None
    intrinsic, lanes = dot_intrinsic(cpu.int8_dot, lanes)
    p_i, u = _tile(width, channels, lanes, cpu)
    _pack(sch, block, weight, lanes)
    p_o, p_in = sch.split(w, factors=[None, p_i])
    c_o, c_u, c_v = sch.split(c, factors=[None, u, lanes])
    ci_o, ci_i = sch.split(ci, factors=[None, STEP])
    sch.reorder(c_o, *spatial, p_o, *taps, ci_o, p_in, c_u, c_v, ci_i)
    outer = sch.fuse(c_o, *spatial, p_o)
    sch.parallel(outer)
    if after:
        sch.reverse_compute_at(after[-1], outer, preserve_unit_loops=True)
        vectorize_inner(sch, after[-1], cpu.lanes)
    sch.decompose_reduction(block, taps[0] if taps else ci_o)
    sch.unroll(p_in)
    sch.unroll(c_u)
    sch.tensorize(c_v, intrinsic)
    return sch


def int8_conv(func: Any, cpu: CpuShape) -> Any | None:
    """Int8 kernels: the dot-product schedule where it applies, else the fp32 rule's register
    tile on int32 lanes (depthwise convs, channels the dot product does not divide)."""
    from tvm import s_tir

    from edgec.compiler.codegen.cpu.schedules import reduction_tile

    if not int8_reduction(func):
        return None
    try:
        sch = dot_conv(func, cpu)
    except (RuntimeError, ValueError):  # a loop nest tensorize cannot match
        sch = None
    if sch is not None:
        return sch
    plain = s_tir.Schedule(func)
    block, kinds = next((b, k) for b, k in top_blocks(plain) if set(k) != {"S"})
    channelwise = reduction_length(plain, block, spatial_prefix(kinds)) == 0  # depthwise
    sch = reduction_tile(func, cpu, DEPTHWISE if channelwise else RULE, copy_pads=True)
    if sch is not None and channelwise:  # decompose_reduction named the update block
        _unroll_taps(sch, sch.get_sblock(f"{plain.get(block).name_hint}_update"))
    return sch


def _unroll_taps(sch: Any, block: Any) -> None:
    """Unroll the taps of the int32-lane tile (the serial loops between its parallel loop and
    its unrolled columns), so the loads of one input pixel the taps of neighbouring output
    columns share are one load: a 3x3 depthwise tile of 14 columns loads 48 input vectors
    per output row instead of 126."""
    from tvm import tirx

    loops = sch.get_loops(block)
    kinds = [sch.get(loop).kind for loop in loops]
    if tirx.ForKind.PARALLEL not in kinds or tirx.ForKind.UNROLLED not in kinds:
        return
    first = kinds.index(tirx.ForKind.PARALLEL) + 1
    last = kinds.index(tirx.ForKind.UNROLLED, first)
    taps = [loop for loop in loops[first:last] if sch.get(loop).kind == tirx.ForKind.SERIAL]
    if taps and math.prod(extent(sch, t) or MAX_TAPS + 1 for t in taps) <= MAX_TAPS:
        for t in taps:
            sch.unroll(t)
