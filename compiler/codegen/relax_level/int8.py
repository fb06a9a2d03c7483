"""Int8 convs and matmuls: QDQ fake quantization (as TVM's ONNX importer writes it) in integers.

Pattern, in the imported NCHW graph:

    y = conv2d(dequantize(xq, sx, zx), dequantize(wq, sw, 0))

with xq uint8 or int8 (scalar sx, zx), wq a constant int8 OIHW kernel (sw scalar or one per
output channel, zero point 0), one group or depthwise (groups = C_in = C_out). Rewrite:

    xt = xq (shifted by 128 to the target's activation dtype: xq - 128, zx - 128, exact)
    xp = pad(xt, conv's padding, pad_value=zt)    + input channels to a multiple of 4 (with zt;
                                                    the padded weights are 0) for a dense conv
    acc[n] = conv2d(xp, wq, padding=0, out_dtype=int32) - zt * sum_{c,kh,kw} wq[n]
    y[n] = float32(acc[n]) * (sx * sw[n])

(where zt is 0, as after a ReLU, the conv keeps its own zero padding instead of the pad),
exact up to fp32 rounding of the last multiply: sx * sw[n] * sum (xt - zt) * wq is what the fp32
conv on dequantized operands computes. A bias add that follows stays as it is and fuses into
the epilogue. A matmul(dequantize(xq), w) with w = dequantize(wq[K, N]) or its transpose (a
Gemm's transB) likewise becomes float32(matmul(xt, wq) - zt * sum_k wq[k, n]) * (sx * sw[n]).
The quantize and dequantize ops left are qdq_elementwise.py's.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from edgec.compiler.codegen.relax_level.rewrite import (
    bound_constant,
    op_name,
    rewrite_functions,
    static_shape,
)
from edgec.compiler.passes.report import PassReport

REDUCTION_STEP = 4  # input channels per dot-product step (vpdpbusd, sdot)
SHIFT = 128  # uint8 <-> int8


@dataclass(frozen=True)
class Int8Options:
    activation: str = "uint8"  # the activation dtype the target's int8 kernels take


def scalar(value: np.ndarray | None) -> float | None:
    return None if value is None or value.size != 1 else value.reshape(-1)[0].item()


def _bound(mutator: Any, expr: Any) -> Any:
    return mutator.lookup_binding(expr) if _is_var(expr) else expr


def _operands(mutator: Any, x: Any, w: Any) -> tuple | str | None:
    """(xq, sx, zx, wq, sw, w's axis) of dequantized operands x (per tensor) and w (constant
    int8, zero point 0); or why not; None where neither is dequantized (not QDQ)."""
    if op_name(x) != "relax.dequantize" and op_name(w) != "relax.dequantize":
        return None
    if op_name(x) != "relax.dequantize" or op_name(w) != "relax.dequantize":
        return "only one operand dequantized"
    xq, wq = x.args[0], bound_constant(mutator, w.args[0])
    sx, zx = (scalar(bound_constant(mutator, a)) for a in x.args[1:])
    sw, zw = (bound_constant(mutator, a) for a in w.args[1:])
    if wq is None or sw is None or zw is None:
        return "weights not constant"
    if sx is None or zx is None:
        return "activation scale or zero point not one constant"
    if str(xq.ty.dtype) not in ("uint8", "int8") or wq.dtype != np.int8:
        return f"{xq.ty.dtype} x {wq.dtype} (uint8/int8 x int8 only)"
    if np.any(zw != 0):
        return "weight zero point not 0"
    if static_shape(xq.ty) is None:
        return "symbolic shape"
    return xq, float(sx), int(zx), wq, sw.reshape(-1), int(w.attrs.axis) % wq.ndim


def _per_output(sw: np.ndarray, axis: int, wq: np.ndarray, out_axis: int) -> np.ndarray | None:
    """The weight scale per output channel, where it is per tensor or along `out_axis`."""
    if sw.size == 1 or sw.size == wq.shape[out_axis] and axis == out_axis:
        return np.broadcast_to(sw, wq.shape[out_axis:out_axis + 1])
    return None


def _match(mutator: Any, call: Any) -> tuple[Any, str | None]:
    """(the conv's operands, None) or (None, why it is declined); (None, None): not QDQ."""
    found = _operands(mutator, *(_bound(mutator, a) for a in call.args))
    if not isinstance(found, tuple):
        return None, found
    xq, sx, zx, wq, sw, axis = found
    attrs, shape, out = call.attrs, static_shape(xq.ty), static_shape(call.ty)
    if (attrs.data_layout, attrs.kernel_layout) != ("NCHW", "OIHW") or out is None:
        return None, "layout"
    groups = int(attrs.groups)
    if groups != 1 and not groups == shape[1] == out[1] == wq.shape[0]:
        return None, f"{groups} groups (one, or depthwise only)"
    sw = _per_output(sw, axis, wq, 0)
    if sw is None:
        return None, "weight scale neither per tensor nor per output channel"
    return (xq, sx, zx, wq, sw), None


def _match_dense(mutator: Any, call: Any) -> tuple[Any, str | None]:
    """_match for matmul(x[M, K], w[K, N]), w a dequantize or a transposed one (Gemm)."""
    x, w = (_bound(mutator, a) for a in call.args)
    transposed = op_name(w) == "relax.permute_dims" and [int(a) for a in w.attrs.axes or []] \
        == [1, 0]
    found = _operands(mutator, x, _bound(mutator, w.args[0]) if transposed else w)
    if not isinstance(found, tuple):
        return None, found
    xq, sx, zx, wq, sw, axis = found
    if len(static_shape(xq.ty)) != 2 or wq.ndim != 2:
        return None, "not a 2-D matmul"
    out_axis = 0 if transposed else 1
    sw = _per_output(sw, axis, wq, out_axis)
    if sw is None:
        return None, "weight scale neither per tensor nor per output column"
    return (xq, sx, zx, wq.T if transposed else wq, sw), None


def _is_var(expr: Any) -> bool:
    from tvm import relax

    return isinstance(expr, relax.Var)


def _to_activation(bb: Any, xq: Any, zx: int, want: str) -> tuple[Any, int]:
    """xq and its zero point in dtype `want`: shifted by 128 where the dtypes differ."""
    from tvm import relax

    have = str(xq.ty.dtype)
    if have == want:
        return xq, zx
    shift = -SHIFT if have == "uint8" else SHIFT
    wide = bb.emit(relax.op.astype(xq, "int16"))
    moved = bb.emit(relax.op.add(wide, relax.const(shift, "int16")))
    return bb.emit(relax.op.astype(moved, want)), zx + shift


def _int8_conv(bb: Any, call: Any, operands: tuple, options: Int8Options) -> Any:
    """The rewrite of the module docstring, emitted into `bb`; returns y."""
    from tvm import relax

    xq, sx, zx, wq, sw = operands
    xt, zt = _to_activation(bb, xq, zx, options.activation)
    attrs = call.attrs
    top, left, bottom, right = (int(p) for p in attrs.padding)
    groups = int(attrs.groups)
    extra = (-wq.shape[1]) % REDUCTION_STEP if groups == 1 else 0
    if extra:
        wq = np.pad(wq, [(0, 0), (0, extra), (0, 0), (0, 0)])
    padding = [0, 0, 0, 0]
    if zt == 0 and not extra:  # the conv's own zero padding pads with zt
        padding = [top, left, bottom, right]
    elif top or left or bottom or right or extra:
        xt = bb.emit(relax.op.nn.pad(xt, [0, 0, 0, extra, top, bottom, left, right],
                                     pad_value=float(zt)))
    acc = bb.emit(relax.op.nn.conv2d(
        xt, relax.const(wq), strides=attrs.strides, padding=padding,
        dilation=attrs.dilation, groups=groups, out_dtype="int32"))
    k = wq.shape[0]
    correction = zt * wq.reshape(k, -1).astype(np.int64).sum(axis=1)
    if np.any(correction):
        acc = bb.emit(relax.op.subtract(
            acc, relax.const(correction.astype(np.int32).reshape(1, k, 1, 1))))
    scale = (np.float64(sx) * sw.astype(np.float64)).astype(np.float32).reshape(1, k, 1, 1)
    return relax.op.multiply(bb.emit(relax.op.astype(acc, "float32")), relax.const(scale))


def _int8_dense(bb: Any, operands: tuple, options: Int8Options) -> Any:
    """y[m, n] = float32(matmul(xt, wq) - zt * sum_k wq[k, n]) * (sx * sw[n])."""
    from tvm import relax

    xq, sx, zx, wq, sw = operands
    xt, zt = _to_activation(bb, xq, zx, options.activation)
    acc = bb.emit(relax.op.matmul(xt, relax.const(np.ascontiguousarray(wq)), out_dtype="int32"))
    correction = zt * wq.astype(np.int64).sum(axis=0)
    if np.any(correction):
        acc = bb.emit(relax.op.subtract(acc, relax.const(correction.astype(np.int32))))
    scale = (np.float64(sx) * sw.astype(np.float64)).astype(np.float32)
    return relax.op.multiply(bb.emit(relax.op.astype(acc, "float32")), relax.const(scale))


def _convs(mod: Any, options: Int8Options, report: PassReport) -> Any:
    """`mod` with each QDQ conv of the pattern as an int8 conv."""
    from tvm import relax

    @relax.expr_functor.mutator
    class Rewrite(relax.PyExprMutator):
        def visit_call_(self, call: Any) -> Any:
            call = super().visit_call_(call)
            name = op_name(call)
            if name not in ("relax.nn.conv2d", "relax.matmul"):
                return call
            conv = name == "relax.nn.conv2d"
            operands, why = (_match if conv else _match_dense)(self, call)
            shape = "x".join(map(str, static_shape(call.ty) or "?"))
            key = f"conv {shape} groups {int(call.attrs.groups)}" if conv else f"matmul {shape}"
            if why is not None:
                report.decline(key, why)
            if operands is None:
                return call
            if not conv:
                report.count("matmul")
                return _int8_dense(self.builder_, operands, options)
            report.count("depthwise conv" if int(call.attrs.groups) > 1 else "conv")
            return _int8_conv(self.builder_, call, operands, options)

    return rewrite_functions(Rewrite(mod), mod)


def int8(mod: Any, options: Int8Options | None = None) -> tuple[Any, PassReport]:
    """`mod` with its QDQ convs in integer arithmetic; a module without them comes back
    unchanged."""
    from tvm import relax

    options = options or Int8Options()
    report = PassReport("int8")
    mod = _convs(mod, options, report)
    if report.changed:  # the dequantized operands, now read by nothing
        mod = relax.transform.DeadCodeElimination()(mod)
    return mod, report
