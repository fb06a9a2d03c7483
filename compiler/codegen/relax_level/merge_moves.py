"""Merge each kernel that only moves data into the conv (or other reducing) kernel reading it.

    t = call_tir(transpose_k, (x,))           y = call(merged, (x, w, b))
    y = call_tir(conv_k, (t, w, b))     ->    merged: conv_k reading x[n, c, h, w] where it
                                              read t[n, h, w, c]; no t (FuseTIR + inlining)

A move kernel has one input, and each of its blocks stores a plain load of it: a transpose, a
reshape, a slice, with no arithmetic. The channels-last layout leaves one in front of the
first conv of every model (the NCHW input made NHWC), and ShuffleNetV2 has one at each
channel shuffle. As a kernel of its own it reads and writes the whole tensor and costs a
parallel launch. Merged, the conv's schedule inlines it as a prologue (cpu/schedules
inlines every block before the reduction), so the conv reads the source through the index
map. Every value is the same load as before, so outputs are bit-identical.

Only single-input moves merge: a Concat (several inputs) inlined into a conv costs a select
per load, and an arithmetic prologue (SE scaling) is recomputed for every output-channel
tile. Inlining SqueezeNet's concats made it 1.2x slower; these moves measured 1-7% faster
(MobileNetV3-Small 7%, ShuffleNetV2 5%, MobileNetV2 2%, ResNet-18 unchanged).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from edgec.compiler.codegen.cpu.loops import top_blocks
from edgec.compiler.codegen.relax_level.merge_chains import merge_pairs


def moves_data(func: Any) -> bool:
    """One input, and every block stores a load of it: a transpose, reshape or slice."""
    import tvm
    from tvm import s_tir, tirx

    if len(func.params) != 2:  # input and output
        return False
    sch = s_tir.Schedule(func)
    blocks = top_blocks(sch)
    for block, kinds in blocks:
        body = sch.get(block).body
        if set(kinds) != {"S"} or not isinstance(body, tirx.BufferStore) \
                or not isinstance(body.value, tvm.ir.TensorLoad):
            return False
    return bool(blocks)


def reduces(func: Any) -> bool:
    """A kernel with a reduction block (conv, dense, pooling): its rules inline prologues."""
    from tvm import s_tir

    return any(set(kinds) != {"S"} for _, kinds in top_blocks(s_tir.Schedule(func)))


def merge_moves(mod: Any, accept: Callable[[Any], bool] | None = None) -> Any:
    """`mod` with every move kernel whose output only a reducing kernel reads (as its first
    argument) merged into that kernel; `accept` vets each merged kernel as in merge_pairs."""
    return merge_pairs(mod, moves_data, reduces, accept)
