"""The qoperator pass's ops with weights: QLinearConv, QLinearMatMul, QGemm (com.microsoft),
ConvInteger and MatMulInteger, each as its QDQ definition (qoperator.py states them)."""

from __future__ import annotations

import numpy as np
import onnx

from .graph import attr
from .qoperator_base import (
    MS,
    Emit,
    QContext,
    QOp,
    arg,
    constants_reason,
    first,
    qtype_reason,
    scalar_reason,
)

_CONV_ATTRS = ("auto_pad", "dilations", "group", "kernel_shape", "pads", "strides")
EXACT_LIMIT = 2 ** 24  # every integer of magnitude below it is a float32


def _attrs(node: onnx.NodeProto, names) -> dict:
    return {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute
            if a.name in names}


def _per_channel_reason(index, ctx: QContext, node, scale: int, length: int | None,
                        what: str) -> str | None:
    """Why the scale at `scale` is neither per-tensor nor one value per `what` (`length`)."""
    s, z = ctx.const(index, arg(node, scale)), ctx.const(index, arg(node, scale + 1))
    if z is not None and z.size not in (1, s.size):
        return f"'{arg(node, scale + 1)}' has {z.size} values for {s.size} scales"
    if s.size == 1:
        return None
    if s.ndim != 1 or (length is not None and s.size != length):
        return f"'{arg(node, scale)}' has shape {list(s.shape)}, not one value per {what}"
    if ctx.opset < 13:
        return f"per-axis scales need opset 13 (DequantizeLinear axis); the model has {ctx.opset}"
    return None


def _weight_dim(index, ctx: QContext, name: str, dim: int) -> int | None:
    w = ctx.const(index, name)
    return None if w is None or w.ndim <= dim else w.shape[dim]


def _bias_reason(index, ctx: QContext, node, pos: int) -> str | None:
    b = arg(node, pos)
    if b and ctx.const(index, b) is None:
        return f"bias '{b}' is not a constant"
    return None


def _fp32_bias(index, ctx: QContext, emit: Emit, bias: str, *scales: str,
               alpha: float = 1.0) -> str:
    """An int32 bias at scale alpha * product(scales), zero point 0, as float32 (what
    DequantizeLinear(bias, that scale) gives)."""
    scale = np.float32(alpha)
    for s in scales:
        scale = (scale * ctx.const(index, s).astype(np.float32)).astype(np.float32)
    value = ctx.const(index, bias).astype(np.float32) * scale
    return emit.const("bias_fp32", value.astype(np.float32))


# QLinearConv(x, xs, xz, w, ws, wz, ys, yz, B?)
def _qconv_check(node, index, ctx) -> str | None:
    return first(lambda: constants_reason(node, index, ctx, (1, 2, 4, 5, 6, 7), (1, 2, 4, 5, 6, 7)),
                 lambda: scalar_reason(index, ctx, node, (1, 2, 6, 7)),
                 lambda: _per_channel_reason(index, ctx, node, 4,
                                             _weight_dim(index, ctx, arg(node, 3), 0),
                                             "output channel"),
                 lambda: _bias_reason(index, ctx, node, 8))


def _qconv(node, index, ctx, emit: Emit) -> None:
    x = emit.dq(arg(node, 0), arg(node, 1), arg(node, 2))
    w = emit.dq(arg(node, 3), arg(node, 4), arg(node, 5), axis=0)
    inputs = [x, w]
    if arg(node, 8):
        inputs.append(_fp32_bias(index, ctx, emit, arg(node, 8), arg(node, 1), arg(node, 4)))
    y = emit.op("Conv", inputs, **_attrs(node, _CONV_ATTRS))
    emit.q(y, arg(node, 6), arg(node, 7), arg(node, 0), node.output[0])


# QLinearMatMul(a, as, az, b, bs, bz, ys, yz)
def _qmatmul_check(node, index, ctx) -> str | None:
    rank = ctx.rank(index, arg(node, 3))
    return first(lambda: constants_reason(node, index, ctx, (1, 2, 4, 5, 6, 7), (1, 2, 4, 5, 6, 7)),
                 lambda: scalar_reason(index, ctx, node, (1, 2, 6, 7)),
                 lambda: None if rank else f"rank of '{arg(node, 3)}' unknown",
                 lambda: _per_channel_reason(index, ctx, node, 4,
                                             _weight_dim(index, ctx, arg(node, 3), rank - 1),
                                             "column of b"))


def _qmatmul(node, index, ctx, emit: Emit) -> None:
    a = emit.dq(arg(node, 0), arg(node, 1), arg(node, 2))
    b = emit.dq(arg(node, 3), arg(node, 4), arg(node, 5), axis=ctx.rank(index, arg(node, 3)) - 1)
    y = emit.op("MatMul", [a, b])
    emit.q(y, arg(node, 6), arg(node, 7), arg(node, 0), node.output[0])


# QGemm(A, as, az, B, bs, bz, C?, ys?, yz?) alpha, transA, transB
def _qgemm_check(node, index, ctx) -> str | None:
    n_axis = 0 if attr(node, "transB", 0) else 1
    pairs = [(0, 2), (3, 5)] + ([(0, 8)] if arg(node, 7) else [])
    return first(lambda: constants_reason(node, index, ctx, (1, 2, 4, 5, 7, 8), (1, 4)),
                 lambda: scalar_reason(index, ctx, node, (1, 2, 7, 8)),
                 lambda: _per_channel_reason(index, ctx, node, 4,
                                             _weight_dim(index, ctx, arg(node, 3), n_axis),
                                             "output column"),
                 lambda: _bias_reason(index, ctx, node, 6),
                 lambda: qtype_reason(node, index, ctx, pairs))


def _qgemm(node, index, ctx, emit: Emit) -> None:
    alpha, trans_b = float(attr(node, "alpha", 1.0)), attr(node, "transB", 0)
    a = emit.dq(arg(node, 0), arg(node, 1), arg(node, 2))
    b = emit.dq(arg(node, 3), arg(node, 4), arg(node, 5), axis=0 if trans_b else 1)
    inputs = [a, b]
    if arg(node, 6):
        inputs.append(_fp32_bias(index, ctx, emit, arg(node, 6), arg(node, 1), arg(node, 4),
                                 alpha=alpha))
    out = None if arg(node, 7) else node.output[0]  # without y_scale the output is float
    y = emit.op("Gemm", inputs, out, alpha=alpha, beta=1.0, transA=attr(node, "transA", 0),
                transB=trans_b)
    if arg(node, 7):
        emit.q(y, arg(node, 7), arg(node, 8), arg(node, 0), node.output[0])


def _span(dtype: np.dtype, zp: np.ndarray) -> np.ndarray:
    """max |q - zp| over the values q of `dtype`, per zero point."""
    info = np.iinfo(dtype)
    zp = zp.astype(np.int64)
    return np.maximum(zp - info.min, info.max - zp)


def _sum_bound(index, ctx: QContext, node, axis: int, reduce_axes) -> float | None:
    """A bound on |sum of (x - xz)(w - wz)| from the weights (input 1, out channels along
    `axis`, summed over `reduce_axes`) and the largest |x - xz|; None if it cannot be had."""
    x, w, xz, wz = (arg(node, i) for i in range(4))
    w_value, x_type = ctx.const(index, w), ctx.dtype(index, x)
    if w_value is None or x_type is None:
        return None
    wzv = ctx.const(index, wz) if wz else np.zeros((), w_value.dtype)
    shape = [1] * w_value.ndim
    if wzv.size > 1:
        shape[axis] = wzv.size
    diff = np.abs(w_value.astype(np.int64) - wzv.astype(np.int64).reshape(shape))
    xzv = ctx.const(index, xz) if xz else np.zeros((), x_type)
    info = np.iinfo(x_type)  # a runtime zero point may be any value of the type
    span = _span(x_type, xzv).max() if xzv is not None else info.max - info.min
    return float(diff.sum(axis=reduce_axes).max(initial=0) * span)


def _integer_check(node, index, ctx, axis: int, reduce_axes) -> str | None:
    """ConvInteger / MatMulInteger: known int8/uint8 types, constant weights and weight zero
    points, an input zero point that is one constant or a runtime scalar (absent: 0), and
    integer sums that float32 holds exactly."""
    if arg(node, 3) and ctx.const(index, arg(node, 3)) is None:
        return f"weight zero point '{arg(node, 3)}' is not a constant"
    for i in (0, 1):
        if ctx.dtype(index, arg(node, i)) not in (np.int8, np.uint8):
            return f"type of '{arg(node, i)}' unknown or not int8/uint8"
    zx = ctx.const(index, arg(node, 2)) if arg(node, 2) else None
    if zx is not None and zx.size != 1:
        return f"'{arg(node, 2)}' holds {zx.size} values (only per-tensor is defined here)"
    if arg(node, 2) and zx is None and (ctx.dtype(index, arg(node, 2)) != ctx.dtype(
            index, arg(node, 0)) or ctx.rank(index, arg(node, 2)) != 0):
        return f"runtime zero point '{arg(node, 2)}' is not a scalar of the input's type"
    zw = ctx.const(index, arg(node, 3)) if arg(node, 3) else None
    if zw is not None and zw.size > 1 and (zw.ndim != 1 or ctx.opset < 13):
        return f"'{arg(node, 3)}' is not one value per output channel (opset 13 or later)"
    bound = _sum_bound(index, ctx, node, axis, reduce_axes)
    if bound is None:
        return "weights are not constants: the float32 sums cannot be bounded below 2^24"
    if bound >= EXACT_LIMIT:
        return f"sums reach {bound:.3g}, not below 2^24: float32 would round them"
    return None


def _integer(node, ctx, emit: Emit, op: str, w_axis: int, **attrs) -> None:
    """(x - xz) and (w - wz) as float32 (DequantizeLinear at scale 1), the float op, then
    Round and Cast to int32."""
    one = emit.const("one", np.ones((), np.float32))
    x_zp = emit.per_tensor(emit.zero_point(arg(node, 0), arg(node, 2)))
    x = emit.op("DequantizeLinear", [arg(node, 0), one, x_zp])
    w_zp = emit.per_tensor(emit.zero_point(arg(node, 1), arg(node, 3)))
    zw = ctx.const(emit.index, arg(node, 3)) if arg(node, 3) else None
    if zw is not None and zw.size > 1:  # one zero point per output channel
        ones = emit.const("ones", np.ones(zw.shape, np.float32))
        w = emit.op("DequantizeLinear", [arg(node, 1), ones, w_zp], axis=w_axis)
    else:
        w = emit.op("DequantizeLinear", [arg(node, 1), one, w_zp])
    y = emit.op(op, [x, w], **attrs)
    emit.op("Cast", [emit.op("Round", [y])], node.output[0], to=onnx.TensorProto.INT32)


def _conv_integer_check(node, index, ctx) -> str | None:
    w = ctx.const(index, arg(node, 1))
    return _integer_check(node, index, ctx, 0, tuple(range(1, w.ndim)) if w is not None else ())


def _matmul_integer_check(node, index, ctx) -> str | None:
    w = ctx.const(index, arg(node, 1))
    if w is not None and w.ndim != 2:
        return "b is not a 2-D constant"
    return _integer_check(node, index, ctx, 1, (0,))


QOPS = [
    QOp("", "QLinearConv", _qconv_check, _qconv),
    QOp("", "QLinearMatMul", _qmatmul_check, _qmatmul),
    QOp(MS, "QGemm", _qgemm_check, _qgemm),
    QOp("", "ConvInteger", _conv_integer_check,
        lambda n, i, c, e: _integer(n, c, e, "Conv", 0, **_attrs(n, _CONV_ATTRS))),
    QOp("", "MatMulInteger", _matmul_integer_check,
        lambda n, i, c, e: _integer(n, c, e, "MatMul", 1)),
]
