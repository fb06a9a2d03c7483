"""Variadic Max/Min/Sum/Mean back to binary ops, so channels-last can rewrite around them.

Pattern (TVM's ONNX importer for Max, Min, Sum, Mean of n inputs):

    s = stack([broadcast_to(x_1, S), ..., broadcast_to(x_n, S)], axis=0)
    y = max|min|sum|mean(s, axis=[0], keepdims=False)

Rewrite: y = op(op(x_1, x_2), ..., x_n) with the broadcasting binary op (maximum, minimum,
add; Mean divides the sum by n). Same values: the reduction over the new axis is that fold,
and S is the broadcast shape of the x_i (checked: where the fold's shape is not S, the match
is left alone). Why: ConvertLayout has no layout rule for a stack axis in front of NCHW (it
fails on "Invalid SLayout": GeM pooling's Max(x, eps) could not build); the binary ops are
elementwise and take any layout.
"""

from __future__ import annotations

from typing import Any

from edgec.compiler.codegen.relax_level.rewrite import rewrite_functions

_BINARY = {"relax.max": "maximum", "relax.min": "minimum", "relax.sum": "add",
           "relax.mean": "add"}


def _stacked(mutator: Any, arg: Any) -> list[Any] | None:
    """The x_i of `stack([broadcast_to(x_i, S)...], axis=0)` bound to `arg`, else None."""
    from tvm import relax

    bound = mutator.lookup_binding(arg) if isinstance(arg, relax.Var) else arg
    if not isinstance(bound, relax.Call) or getattr(bound.op, "name", "") != "relax.stack" \
            or int(bound.attrs.axis) != 0:
        return None
    items = bound.args[0]
    if isinstance(items, relax.Var):
        items = mutator.lookup_binding(items)
    if not isinstance(items, relax.Tuple):
        return None
    xs = []
    for item in items.fields:
        b = mutator.lookup_binding(item) if isinstance(item, relax.Var) else item
        if not isinstance(b, relax.Call) or getattr(b.op, "name", "") != "relax.broadcast_to":
            return None
        xs.append(b.args[0])
    return xs


def unstack(mod: Any) -> Any:
    """`mod` with every stack-and-reduce of the pattern above replaced by binary ops."""
    from tvm import relax

    @relax.expr_functor.mutator
    class Rewrite(relax.PyExprMutator):
        def visit_call_(self, call: Any) -> Any:
            call = super().visit_call_(call)
            name = getattr(call.op, "name", "")
            if name not in _BINARY or call.attrs.keepdims or call.attrs.axis is None \
                    or [int(a) for a in call.attrs.axis] != [0]:
                return call
            xs = _stacked(self, call.args[0])
            if not xs or len(xs) < 2:
                return call
            binary = getattr(relax.op, _BINARY[name])
            out = xs[0]
            for x in xs[1:]:
                out = self.builder_.normalize(binary(out, x))
            if [str(d) for d in out.ty.shape.values] != [str(d) for d in call.ty.shape.values]:
                return call  # S was not the inputs' broadcast shape: the fold would differ
            if name == "relax.mean":
                out = relax.op.divide(out, relax.const(len(xs), call.ty.dtype))
            return out

    return relax.transform.DeadCodeElimination()(rewrite_functions(Rewrite(mod), mod))
