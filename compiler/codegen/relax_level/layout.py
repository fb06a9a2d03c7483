"""Channels-last: the imported NCHW graph rewritten to NHWC activations and HWIO weights.

With channels innermost, every conv, depthwise conv, pool and elementwise op reads and writes
contiguous vectors along C, and the weights of a conv are contiguous along C_out: the layout the
schedules in cpu/schedules.py vectorize over. Relax's ConvertLayout does the rewrite and moves the
transposes to the graph's edges; relax_level/fold_numpy.py then transposes the weights once.

Two obstacles are removed first. TVM's ONNX importer lowers Clip (ReLU6 in MobileNets)
straight to TIR kernels (`maximum`/`minimum` via emit_te), which ConvertLayout cannot see
through: every ReLU6 would get a transpose on each side and stop the conv's epilogue fusion.
Those calls are turned back into the Relax ops `maximum(x, lo)` / `minimum(x, hi)` with the same
scalar bound (clip_to_relax). And variadic Max/Min/Sum/Mean, imported as stack + reduce, become
binary ops (unstack.py), for which ConvertLayout has a rule.
"""

from __future__ import annotations

from typing import Any

from edgec.compiler.codegen.cpu.loops import top_blocks
from edgec.compiler.codegen.relax_level.rewrite import rewrite_functions

# conv2d_transpose stays NCHW: TVM legalizes it only in that layout (transposes go around it).
LAYOUTS = {"relax.nn.conv2d": ["NHWC", "HWIO"], "relax.nn.conv2d_transpose": ["NCHW", "IOHW"]}


def _single_block(func: Any) -> str | None:
    from tvm import s_tir

    sch = s_tir.Schedule(func)
    names = [sch.get(b).name_hint for b, _ in top_blocks(sch)]
    return names[0] if len(names) == 1 else None


def clip_to_relax(mod: Any) -> Any:
    """Replace call_tir(maximum|minimum, [x, scalar]) kernels by the Relax binary ops."""
    import tvm
    from tvm import relax, tirx

    call_tir = tvm.ir.Op.get("relax.call_tir")
    ops = {"T_maximum": relax.op.maximum, "T_minimum": relax.op.minimum}
    kinds: dict[Any, Any] = {}
    for gv, func in mod.functions_items():
        if isinstance(func, tirx.PrimFunc) and len(func.params) == 3:
            op = ops.get(_single_block(func) or "")
            if op is not None:
                kinds[gv] = op

    @relax.expr_functor.mutator
    class Rewrite(relax.PyExprMutator):
        def visit_call_(self, call: Any) -> Any:
            call = super().visit_call_(call)
            if call.op != call_tir or call.args[0] not in kinds:
                return call
            args = call.args[1].fields
            if len(args) != 2 or args[1].ty.ndim != 0:
                return call
            return kinds[call.args[0]](args[0], args[1])

    if not kinds:
        return mod
    return relax.transform.DeadCodeElimination()(rewrite_functions(Rewrite(mod), mod))


def channels_last(mod: Any) -> Any:
    from tvm import relax

    from edgec.compiler.codegen.relax_level.unstack import unstack

    return relax.transform.ConvertLayout(LAYOUTS)(unstack(clip_to_relax(mod)))
