"""Channels-last pads: the int8 convs' explicit pads (relax_level/int8.py) moved into NHWC.

Pattern, after channels_last (relax_level/layout.py), which has no layout rule for nn.pad and
so leaves each pad in NCHW between two transposes:

    y = permute_dims(pad(permute_dims(x, [0, 3, 1, 2]), w_nchw, v), [0, 2, 3, 1])

Rewrite: `y = pad(x, w_nhwc, v)`, the same widths permuted to NHWC order. Exact: a pad moves
values, and the transposes cancel. The old pad and transposes go where nothing else reads them.
"""

from __future__ import annotations

from typing import Any

from edgec.compiler.codegen.relax_level.rewrite import op_name, rewrite_functions
from edgec.compiler.passes.report import PassReport

TO_NCHW, TO_NHWC = [0, 3, 1, 2], [0, 2, 3, 1]


def _bound_call(mutator: Any, expr: Any, name: str) -> Any:
    """The call `expr` is bound to where it is a call of op `name`, else None."""
    from tvm import relax

    value = mutator.lookup_binding(expr) if isinstance(expr, relax.Var) else expr
    return value if op_name(value) == name else None


def _axes(call: Any) -> list[int] | None:
    axes = call.attrs.axes
    return None if axes is None else [int(a) for a in axes]


def pads_channels_last(mod: Any) -> tuple[Any, PassReport]:
    """`mod` with each pad between the transposes of the pattern written in NHWC."""
    from tvm import relax

    report = PassReport("int8 pads channels-last")

    @relax.expr_functor.mutator
    class Rewrite(relax.PyExprMutator):
        def visit_call_(self, call: Any) -> Any:
            call = super().visit_call_(call)
            if _bound_call(self, call, "relax.permute_dims") is None or _axes(call) != TO_NHWC:
                return call
            pad = _bound_call(self, call.args[0], "relax.nn.pad")
            inner = None if pad is None else _bound_call(self, pad.args[0], "relax.permute_dims")
            if inner is None or _axes(inner) != TO_NCHW:
                return call
            if str(pad.attrs.pad_mode) != "constant":
                report.decline("pad", f"{pad.attrs.pad_mode} mode")
                return call
            w = [int(p) for p in pad.attrs.pad_width]
            widths = [p for axis in TO_NHWC for p in w[2 * axis: 2 * axis + 2]]
            report.count("pad")
            return relax.op.nn.pad(inner.args[0], widths, pad_value=float(pad.attrs.pad_value))

    mod = rewrite_functions(Rewrite(mod), mod)
    if report.changed:
        mod = relax.transform.DeadCodeElimination()(mod)
    return mod, report
