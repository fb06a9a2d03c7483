"""Fold Relax ops on constants with numpy, before legalization.

Pattern: `lv = op(c_1, ..., c_k)` in a Relax function, where every tensor argument is a
constant (or a variable bound to one, folded earlier in the block) and `op` is in FOLDS; the
call becomes the constant numpy computes. Exact: transposes, reshapes and selects move
values; the arithmetic ops compute in the constants' own dtype, as the kernels would.

Why: channels_last turns each conv's OIHW weight and its bias into permute_dims and reshape
calls on constants, and TVM's ONNX importer writes each Clip bound as isnan/where on a scalar.
TVM's FoldConstant legalizes each such call to a kernel and builds it with LLVM, one build
per call: 290 builds, 11.6 s of MobileNetV2's 24 s compile. Numpy does the same in
milliseconds; FoldConstant then finds nothing left to build but the calls numpy does not know.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from edgec.compiler.codegen.relax_level.rewrite import (
    bound_constant,
    op_name,
    rewrite_functions,
    static_shape,
)


def _axes(call: Any) -> Any:
    axes = call.attrs.axes
    return None if axes is None else [int(a) for a in axes]


def _ints(values: Any) -> list[int] | None:
    try:
        return [int(d) for d in values]
    except TypeError:  # a symbolic dimension
        return None


def _shape(call: Any) -> list[int] | None:
    """A reshape's target shape, where static."""
    from tvm import relax

    shape = call.args[1]
    return _ints(shape.values) if isinstance(shape, relax.ShapeExpr) else None


FOLDS: dict[str, Callable[..., Any]] = {
    "relax.permute_dims": lambda call, x: np.transpose(x, _axes(call)),
    "relax.isnan": lambda call, x: np.isnan(x),
    "relax.where": lambda call, c, a, b: np.where(c, a, b).astype(np.result_type(a, b)),
    "relax.add": lambda call, a, b: np.add(a, b),
    "relax.subtract": lambda call, a, b: np.subtract(a, b),
    "relax.multiply": lambda call, a, b: np.multiply(a, b),
    "relax.maximum": lambda call, a, b: np.maximum(a, b),
    "relax.minimum": lambda call, a, b: np.minimum(a, b),
}


@dataclass
class FoldReport:
    folded: dict[str, int]  # op name -> calls folded

    @property
    def changed(self) -> bool:
        return bool(self.folded)


def fold_numpy(mod: Any) -> tuple[Any, FoldReport]:
    """`mod` with the calls of FOLDS (and reshapes) on constants in its Relax functions
    replaced by their values."""
    from tvm import relax

    folded: dict[str, int] = {}

    @relax.expr_functor.mutator
    class Fold(relax.PyExprMutator):
        def visit_call_(self, call: Any) -> Any:
            call = super().visit_call_(call)
            name = op_name(call)
            if name == "relax.reshape":
                shape, x = _shape(call), bound_constant(self, call.args[0])
                if shape is None or x is None:
                    return call
                value = x.reshape(shape)
            elif name in FOLDS:
                args = [bound_constant(self, a) for a in call.args]
                if any(a is None for a in args):
                    return call
                value = FOLDS[name](call, *args)
            else:
                return call
            want = call.ty
            dtype = str(want.dtype)
            value = np.array(value, dtype=dtype, order="C")
            if list(value.shape) != static_shape(want):
                return call  # not a static shape numpy agrees on: left to FoldConstant
            folded[name] = folded.get(name, 0) + 1
            return relax.const(value, dtype)

    return rewrite_functions(Fold(mod), mod), FoldReport(folded)
