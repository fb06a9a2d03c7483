"""Per-tensor QDQ as elementwise ops: what relax_level/int8.py leaves of a QDQ graph.

Pattern: `quantize(x, s, z)` and `dequantize(q, s, z)` with one scale and one zero point
(activations, as TVM's ONNX importer writes QuantizeLinear/DequantizeLinear). Rewrite:

    quantize(x, s, z)   -> astype(min(max(round(x * r) + z, lo), hi), dtype), r = fp32(1 / s)
    dequantize(q, s, z) -> (float32(q) - z) * s

the ONNX definitions (round: half to even; lo, hi: the dtype's range) but for x * r in place
of x / s: a multiply in every int8 kernel's epilogue instead of a division (a vector division
issues at a fraction of a multiply's rate). Where x = a * c1 + c2 with constants c1, c2 (an
int8 conv's scale and bias, relax_level/int8.py; or x = a * c1), x * r is a * (c1 r) + c2 r,
one multiply-add.
Each differs from x / s by at most an ulp or two, which moves the rounded value only where
x / s lies that close to a half: a step of the output, as a differently rounded fp32 product
already may. As ops the channels-last
rewrite (layout.py) moves through: the quantize ops have no layout rule, and each would keep
its NCHW between two transposes. A dequantize whose operands are all constants (the weights no
int8 conv took, the int32 biases) is folded by numpy instead, per channel where it is.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from edgec.compiler.codegen.relax_level.int8 import scalar
from edgec.compiler.codegen.relax_level.rewrite import bound_constant, op_name, rewrite_functions
from edgec.compiler.passes.report import PassReport


def _per_tensor(mutator: Any, call: Any) -> tuple[float, float] | None:
    scale, zero = (scalar(bound_constant(mutator, a)) for a in call.args[1:3])
    return None if scale is None or zero is None else (float(scale), float(zero))


def _dequantize_constant(mutator: Any, call: Any) -> np.ndarray | None:
    """numpy's (q - z) * s of a dequantize whose operands are all constants, else None."""
    q, s, z = (bound_constant(mutator, a) for a in call.args[:3])
    if q is None or s is None or z is None:
        return None
    axis = int(call.attrs.axis) % max(q.ndim, 1)
    shape = [-1 if i == axis else 1 for i in range(q.ndim)] if s.size > 1 else [1] * q.ndim
    value = (q.astype(np.float64) - z.reshape(shape)) * s.astype(np.float64).reshape(shape)
    return value.astype(np.float32)


def _elementwise(mod: Any, report: PassReport) -> Any:
    """`mod` with per-tensor quantize/dequantize as elementwise ops, constant ones folded."""
    from tvm import relax

    @relax.expr_functor.mutator
    class Rewrite(relax.PyExprMutator):
        def visit_call_(self, call: Any) -> Any:
            call = super().visit_call_(call)
            name = op_name(call)
            if name == "relax.dequantize":
                value = _dequantize_constant(self, call)
                if value is not None:
                    return relax.const(value)
            if name not in ("relax.quantize", "relax.dequantize"):
                return call
            params = _per_tensor(self, call)
            if params is None:
                report.decline(name, "scale or zero point per channel")
                return call
            report.count(f"{name.split('.')[-1]} as elementwise")
            return _quantize(self, call, *params) if name == "relax.quantize" \
                else _dequantize(self.builder_, call.args[0], *params)

    return rewrite_functions(Rewrite(mod), mod)


def _constant(mutator: Any, arg: Any) -> np.ndarray | None:
    """bound_constant, or the value of a reshape of a constant (a conv's bias as imported)."""
    from tvm import relax

    value = bound_constant(mutator, arg)
    call = mutator.lookup_binding(arg) if value is None and isinstance(arg, relax.Var) else None
    if call is None or op_name(call) != "relax.reshape":
        return value
    inner = bound_constant(mutator, call.args[0])
    shape = [int(d) for d in call.ty.shape.values] if inner is not None else None
    return None if shape is None else inner.reshape(shape)


def _affine(mutator: Any, x: Any) -> tuple[Any, np.ndarray, np.ndarray | None] | None:
    """(a, c1, c2) where `x` is bound to add(multiply(a, c1), c2) with fp32 constants c1, c2
    (an int8 conv's scale and bias), (a, c1, None) where to multiply(a, c1), else None."""
    from tvm import relax

    def bound(expr: Any, name: str) -> Any:
        call = mutator.lookup_binding(expr) if isinstance(expr, relax.Var) else None
        return call if call is not None and op_name(call) == name else None

    add = bound(x, "relax.add")
    mul = bound(add.args[0] if add is not None else x, "relax.multiply")
    if mul is None:
        return None
    c1 = _constant(mutator, mul.args[1])
    c2 = _constant(mutator, add.args[1]) if add is not None else None
    if c1 is None or c1.dtype != np.float32 or add is not None and (
            c2 is None or c2.dtype != np.float32):
        return None
    return mul.args[0], c1, c2


def _quantize(mutator: Any, call: Any, scale: float, zero: float) -> Any:
    from tvm import relax

    bb = mutator.builder_
    dtype = str(call.attrs.out_dtype)
    info = np.iinfo(dtype)
    inverse = np.float64(1.0) / np.float64(scale)
    affine = _affine(mutator, call.args[0])
    if affine is not None:  # (a * c1 + c2) * r as a * (c1 r) + c2 r: one multiply-add
        a, c1, c2 = affine
        x = relax.op.multiply(a, relax.const((c1 * inverse).astype(np.float32)))
        if c2 is not None:
            x = relax.op.add(bb.emit(x), relax.const((c2 * inverse).astype(np.float32)))
    else:
        x = relax.op.multiply(call.args[0], relax.const(np.float32(inverse), "float32"))
    x = bb.emit(relax.op.round(bb.emit(x)))
    x = bb.emit(relax.op.add(x, relax.const(zero, "float32")))
    x = bb.emit(relax.op.maximum(x, relax.const(float(info.min), "float32")))
    x = bb.emit(relax.op.minimum(x, relax.const(float(info.max), "float32")))
    return relax.op.astype(x, dtype)


def _dequantize(bb: Any, q: Any, scale: float, zero: float) -> Any:
    from tvm import relax

    x = bb.emit(relax.op.subtract(relax.op.astype(q, "float32"), relax.const(zero, "float32")))
    return relax.op.multiply(x, relax.const(scale, "float32"))



def qdq_elementwise(mod: Any) -> tuple[Any, PassReport]:
    """`mod` with per-tensor quantize/dequantize as elementwise ops, constant ones folded; a
    module without them comes back unchanged."""
    from tvm import relax

    report = PassReport("qdq elementwise")
    mod = _elementwise(mod, report)
    return (relax.transform.DeadCodeElimination()(mod) if report.changed else mod), report
