"""Loop and block primitives the CPU schedule rules share (schedules, chains,
pixels, winograd_transforms, knobs): reading a kernel's blocks and extents, the register
tile's loop order, vectorizing an inner loop, and repacking constant weights by tile.

The register tile (register_tile) of an S..SR..R block, as schedules' docstring draws it:

    outer loops [c_o, *spatial, w_o]  ->  reduction  ->  w_i (unrolled) x c_u (unrolled) x c_v
                                                         (vectorized: the target's lanes)
"""

from __future__ import annotations

import math
from typing import Any


def extent(sch: Any, loop: Any) -> int | None:
    from tvm import tirx

    ext = sch.get(loop).extent
    return int(ext.value) if isinstance(ext, tirx.IntImm) else None


def vectorize_inner(sch: Any, block: Any, lanes: int) -> None:
    loops = sch.get_loops(block)
    if not loops:
        return
    ext = extent(sch, loops[-1])
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


def pads(block: Any) -> bool:
    """The block writes a bigger buffer than any it reads: padding (a transpose does not)."""
    return len(block.writes) == 1 and all(
        _size(block.writes[0].source) > _size(r.source) for r in block.reads)


def _size(buffer: Any) -> int:
    return math.prod(int(d) for d in buffer.shape)


def _selects_by_index(expr: Any, index_vars: list[Any]) -> bool:
    """`expr` holds an if_then_else or Select whose condition reads one of `index_vars`."""
    from tvm import ir, tirx
    from tvm.tirx.analysis import undefined_vars

    cond = None
    if isinstance(expr, tirx.Select):
        cond = expr.condition
    elif isinstance(expr, ir.Call) and getattr(expr.op, "name", "").endswith("if_then_else"):
        cond = expr.args[0]
    if cond is not None and any(v.same_as(i) for v in undefined_vars(cond, [])
                                for i in index_vars):
        return True
    children = []
    for name in ("a", "b", "value", "condition", "true_value", "false_value"):
        child = getattr(expr, name, None)
        if isinstance(child, ir.Expr):
            children.append(child)
    children += [x for x in (getattr(expr, "args", None) or []) if isinstance(x, ir.Expr)]
    children += list(getattr(expr, "indices", None) or [])
    return any(_selects_by_index(c, index_vars) for c in children)


def parallel_vectorized(sch: Any, block: Any, lanes: int) -> None:
    """A block's loops but the innermost fused and parallel, the innermost vectorized (an
    innermost loop under 4 joins the parallel ones)."""
    loops = sch.get_loops(block)
    inner = extent(sch, loops[-1]) or 0
    outer = loops[:-1] if inner >= 4 and len(loops) > 1 else loops
    sch.parallel(sch.fuse(*outer) if len(outer) > 1 else outer[0])
    if len(outer) < len(loops):
        vectorize_inner(sch, block, lanes)


def fusable_epilogue(sch: Any, block: Any, after: list[Any], lanes: int) -> list[Any]:
    """The epilogue of reduction `block` that may be computed at its tiles: the blocks
    `after` it inlined into the last, which is returned as [last]; or [] where the last
    selects by index (a pad, a concat: a value chosen by where the output is), which then
    stays a loop nest of its own after the reduction, parallel and vectorized.

    A block computed at a tile (reverse_compute_at) covers only the outputs whose values read
    that tile. An output a select fills from elsewhere (a pad's constant, a concat's other
    input) reads no tile, so it would never be written: later calls read what the memory held
    before. Where each output reads the tile (bias, activation, residual add, a broadcast), the
    epilogue follows each tile.
    """
    if not after:
        return after
    for b in after[:-1]:
        sch.compute_inline(b)
    last = sch.get(after[-1])
    value = getattr(last.body, "value", None)  # a BufferStore's; else not an epilogue we know
    if value is not None and not _selects_by_index(value, [iv.var for iv in last.iter_vars]):
        return [after[-1]]
    parallel_vectorized(sch, after[-1], lanes)
    return []


def one_reduction(sch: Any, lanes: int) -> tuple[Any, str, list[Any], list[Any]] | None:
    """The kernel's one reduction block, its iterator kinds, the blocks before it and its
    epilogue as fusable_epilogue leaves it; None where the kernel has no reduction or more."""
    blocks = top_blocks(sch)
    reds = [i for i, (_, kinds) in enumerate(blocks) if set(kinds) != {"S"}]
    if len(reds) != 1:
        return None
    block, kinds = blocks[reds[0]]
    after = fusable_epilogue(sch, block, [b for b, _ in blocks[reds[0] + 1:]], lanes)
    return block, kinds, [b for b, _ in blocks[: reds[0]]], after


def top_blocks(sch: Any) -> list[tuple[Any, str]]:
    """The top-level blocks of a kernel with their iterator kinds ('S' spatial, 'R' reduction)."""
    from tvm import tirx
    from tvm.s_tir.dlight.analysis import get_root_block

    kind = {tirx.IterVar.DataPar: "S", tirx.IterVar.CommReduce: "R"}
    return [(b, "".join(kind.get(iv.iter_type, "O") for iv in sch.get(b).iter_vars))
            for b in sch.get_child_blocks(get_root_block(sch))]


def pack_weights(sch: Any, func: Any, block: Any, tile: int, channels: int) -> None:
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


def channelwise(block: Any, n_s: int) -> bool:
    """Every read indexes its last axis by the block's channel (iterator n_s - 1): depthwise
    conv or pooling (no input broadcast across channels), or a pad of a channels-last input."""
    from tvm.tirx.analysis import undefined_vars

    channel = block.iter_vars[n_s - 1].var
    return all(any(v.same_as(channel) for v in undefined_vars(r.region[-1].min, []))
               for r in block.reads)


def spatial_prefix(kinds: str) -> int:
    """n_s for an S..SR..R block (n_s spatial iterators, then only reductions), else 0."""
    n_s = len(kinds) - len(kinds.lstrip("S"))
    return n_s if n_s < len(kinds) and set(kinds[n_s:]) == {"R"} else 0


def _index_divisors(expr: Any, var: Any, mod: bool = True) -> list[int]:
    """The constants m of every `e // m` (and, with `mod`, `e % m`) in `expr` whose `e`
    reads `var`."""
    from tvm import ir, tirx
    from tvm.tirx.analysis import undefined_vars

    ops = (tirx.FloorDiv, tirx.FloorMod) if mod else (tirx.FloorDiv,)
    found = []
    if isinstance(expr, ops) and isinstance(expr.b, tirx.IntImm) \
            and any(v.same_as(var) for v in undefined_vars(expr.a, [])):
        found.append(int(expr.b.value))
    children = [getattr(expr, name, None)
                for name in ("a", "b", "value", "condition", "true_value", "false_value")]
    children += [*(getattr(expr, "args", None) or []), *(getattr(expr, "indices", None) or [])]
    for child in children:
        if isinstance(child, ir.Expr):
            found += _index_divisors(child, var, mod)
    return found


def channel_period(block: Any, n_s: int) -> int:
    """The run length m over which the output channel c indexes the block's reads as c // m
    (a grouped conv: a run of m output channels reads one input at each step) or as c % m
    (an input tiled m channels at a time): the gcd of every such m; 0 where none."""
    channel = block.iter_vars[n_s - 1].var
    found = [m for r in block.reads for dim in r.region
             for m in _index_divisors(dim.min, channel)]
    return math.gcd(*found) if found else 0


def group_width(block: Any, n_s: int) -> int:
    """Output channels per group of a grouped conv, read from its input's channel index
    (TOPI's c // r * C_g + rc; a depthwise conv with channel multiplier T: c // T); else 0."""
    channel = block.iter_vars[n_s - 1].var
    return next((m for r in block.reads
                 for m in _index_divisors(r.region[-1].min, channel, mod=False) if m > 1), 0)


def grouped_read(block: Any, n_s: int) -> int | None:
    """Which of the block's reads a grouped conv reads as c // m * C_g + rc (its input), else
    None."""
    channel = block.iter_vars[n_s - 1].var
    return next((i for i, r in enumerate(block.reads)
                 if any(m > 1 for m in _index_divisors(r.region[-1].min, channel, mod=False))),
                None)


def reduction_length(sch: Any, block: Any, n_s: int) -> int:
    """Terms in each output's sum where the input is broadcast across output channels (conv,
    dense, and a grouped conv: across its group's); 0 for depthwise conv and pooling, whose
    reads all follow the output channel."""
    if channelwise(sch.get(block), n_s) and not group_width(sch.get(block), n_s):
        return 0
    length = 1
    for loop in sch.get_loops(block)[-len(sch.get(block).iter_vars) + n_s:]:
        length *= extent(sch, loop) or 1
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
    order_tile(sch, [*outer, *loops[n_s:]], w_i, c_u, c_v, v)
    return outer, loops[n_s]


def order_tile(sch: Any, above: list[Any], w_i: Any, c_u: Any, c_v: Any, v: int) -> None:
    """`above` loops, then the register tile: w_i and c_u unrolled, c_v vectorized."""
    sch.reorder(*above, w_i, c_u, c_v)
    if v > 1:
        sch.vectorize(c_v)
    sch.unroll(c_u)
    sch.unroll(w_i)


def planes_to_channels(sch: Any, block: Any, lanes: int) -> bool:
    """Schedule a block writing few channels (innermost extent under `lanes`, e.g. an RGB
    input quantized into NHWC) from planes (a read whose innermost index follows the output's
    width, not its channel): parallel over the outer loops, the width in vectors of `lanes`
    innermost, the channels unrolled around them. The loads and the compute are vectors; the
    stores are strided by the channel count. False (and nothing done) where it does not fit.
    The input quantize of MobileNetV2 (3 x 224 x 224 -> 226 x 226 x 4 uint8): 0.085 -> 0.029 ms.
    """
    loops = sch.get_loops(block)
    if len(loops) < 3:
        return False
    channels, width = extent(sch, loops[-1]), extent(sch, loops[-2])
    if not channels or not width or channels >= lanes or width < lanes:
        return False
    stmt = sch.get(block)
    w_var, c_var = (iv.var for iv in stmt.iter_vars[-2:])
    if not any(_uses(r.region[-1].min, w_var) and not _uses(r.region[-1].min, c_var)
               for r in stmt.reads if r.region):
        return False
    w_o, w_i = sch.split(loops[-2], factors=[None, lanes])
    sch.reorder(w_o, loops[-1], w_i)
    sch.parallel(sch.fuse(*loops[:-2]) if len(loops) > 3 else loops[0])
    sch.unroll(loops[-1])
    sch.vectorize(w_i)
    return True


def _uses(expr: Any, var: Any) -> bool:
    from tvm.tirx.analysis import undefined_vars

    return any(v.same_as(var) for v in undefined_vars(expr, []))
