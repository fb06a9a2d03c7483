"""What the Relax rewrites of this package (layout, fold_numpy, winograd, unstack, int8, ...)
share."""

from __future__ import annotations

from typing import Any


def bound_constant(mutator: Any, arg: Any) -> Any:
    """The numpy value of `arg`, a constant or a variable bound to one, else None."""
    from tvm import relax
    from tvm.ir.expr import Constant

    if isinstance(arg, relax.Var):
        arg = mutator.lookup_binding(arg)
    return arg.value.numpy() if isinstance(arg, Constant) else None


def op_name(expr: Any) -> str:
    """The name of the op `expr` calls ("relax.nn.conv2d"), "" for anything else."""
    import tvm

    op = getattr(expr, "op", None)
    return op.name if isinstance(op, tvm.ir.Op) else ""


def static_shape(ty: Any) -> list[int] | None:
    """A tensor type's shape, where it has one and every dim is static."""
    try:
        return [int(d) for d in ty.shape.values]
    except (TypeError, AttributeError):  # no shape, or a symbolic dim
        return None


def rewrite_functions(mutator: Any, mod: Any) -> Any:
    """`mod` with every Relax function visited by `mutator` (a PyExprMutator made on `mod`)."""
    from tvm import relax

    for gv, func in mod.functions_items():
        if isinstance(func, relax.Function):
            mutator.builder_.update_func(gv, mutator.visit_expr(func))
    return mutator.builder_.get()
