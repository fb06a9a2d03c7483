"""The qoperator pass's com.microsoft ops without weights: QLinearAdd, QLinearMul,
QLinearSigmoid, QLinearLeakyRelu, QLinearGlobalAveragePool, QLinearAveragePool,
QLinearConcat and QLinearSoftmax, each as its QDQ definition (qoperator.py states them)."""

from __future__ import annotations

from onnx import helper

from .graph import attr
from .qoperator_base import MS, Emit, QOp, arg, constants_reason, first, qtype_reason, scalar_reason

_POOL_ATTRS = ("auto_pad", "ceil_mode", "count_include_pad", "kernel_shape", "pads", "strides")


def _plain_check(data: list[int], params: list[int], required: tuple[int, ...] = ()):
    """A check for an op whose scales and zero points at `params` are per-tensor constants;
    (data, zero point) pairs: each data input at `data` has its zero point right after its
    scale (data + 2), and the output's is the last of `params`."""
    pairs = [(d, d + 2) for d in data] + [(data[0], params[-1])]

    def check(node, index, ctx) -> str | None:
        return first(lambda: constants_reason(node, index, ctx, params, required),
                     lambda: scalar_reason(index, ctx, node, params),
                     lambda: qtype_reason(node, index, ctx, pairs))

    return check


def _binary(op: str):
    """QLinearAdd / QLinearMul(A, As, Az?, B, Bs, Bz?, Cs, Cz?) = Q(op(DQ(A), DQ(B)), Cs, Cz)."""
    def rewrite(node, index, ctx, emit: Emit) -> None:
        a = emit.dq(arg(node, 0), arg(node, 1), arg(node, 2))
        b = emit.dq(arg(node, 3), arg(node, 4), arg(node, 5))
        emit.q(emit.op(op, [a, b]), arg(node, 6), arg(node, 7), arg(node, 0), node.output[0])

    return QOp(MS, f"QLinear{op}", _plain_check([0, 3], [1, 2, 4, 5, 6, 7], (1, 4, 6)), rewrite)


def _unary(name: str, op: str, attrs=lambda node: {}):
    """QLinear<op>(X, Xs, Xz?, Ys, Yz?) = Q(op(DQ(X)), Ys, Yz)."""
    def rewrite(node, index, ctx, emit: Emit) -> None:
        x = emit.dq(arg(node, 0), arg(node, 1), arg(node, 2))
        emit.q(emit.op(op, [x], **attrs(node)), arg(node, 3), arg(node, 4), arg(node, 0),
               node.output[0])

    return QOp(MS, name, _plain_check([0], [1, 2, 3, 4], (1, 3)), rewrite)


def _to_channels_first(emit: Emit, x: str, rank: int) -> str:
    return emit.op("Transpose", [x], perm=[0, rank - 1, *range(1, rank - 1)])


def _to_channels_last(emit: Emit, x: str, rank: int, out: str | None = None) -> str:
    return emit.op("Transpose", [x], out, perm=[0, *range(2, rank), 1])


def _gap_check(node, index, ctx) -> str | None:
    plain = _plain_check([0], [1, 2, 3, 4], (1, 3))
    if attr(node, "channels_last", 0) and (ctx.rank(index, arg(node, 0)) or 0) < 3:
        return f"rank of '{arg(node, 0)}' unknown (channels_last needs it)"
    return plain(node, index, ctx)


def _gap(node, index, ctx, emit: Emit) -> None:
    """channels_last=1: X is [N, spatial..., C] and Y is [N, 1..., C]: the mean over the spatial
    axes, in channels-first order and back (GlobalAveragePool reads channels first)."""
    x = emit.dq(arg(node, 0), arg(node, 1), arg(node, 2))
    if attr(node, "channels_last", 0):
        rank = ctx.rank(index, arg(node, 0))
        y = _to_channels_last(emit, emit.op("GlobalAveragePool",
                                            [_to_channels_first(emit, x, rank)]), rank)
    else:
        y = emit.op("GlobalAveragePool", [x])
    emit.q(y, arg(node, 3), arg(node, 4), arg(node, 0), node.output[0])


def _pool(node, index, ctx, emit: Emit) -> None:
    """QLinearAveragePool: AveragePool with the same attributes; channels_last as for GAP
    (the rank is that of kernel_shape plus 2)."""
    x = emit.dq(arg(node, 0), arg(node, 1), arg(node, 2))
    values = {a.name: helper.get_attribute_value(a) for a in node.attribute
              if a.name in _POOL_ATTRS}
    if attr(node, "channels_last", 0):
        rank = len(attr(node, "kernel_shape")) + 2
        y = _to_channels_last(emit, emit.op("AveragePool", [_to_channels_first(emit, x, rank)],
                                            **values), rank)
    else:
        y = emit.op("AveragePool", [x], **values)
    emit.q(y, arg(node, 3), arg(node, 4), arg(node, 0), node.output[0])


def _concat_check(node, index, ctx) -> str | None:
    """QLinearConcat(Ys, Yz, X1, X1s, X1z, X2, ...): triples after the output's pair."""
    if len(node.input) < 5 or (len(node.input) - 2) % 3:
        return f"{len(node.input)} inputs is not 2 + 3 per concatenated tensor"
    data = list(range(2, len(node.input), 3))
    params = [0, 1] + [p for d in data for p in (d + 1, d + 2)]
    return first(lambda: constants_reason(node, index, ctx, params, [0, 1, *(d + 1 for d in data)]),
                 lambda: scalar_reason(index, ctx, node, params),
                 lambda: qtype_reason(node, index, ctx, [(d, d + 2) for d in data]))


def _concat(node, index, ctx, emit: Emit) -> None:
    parts = [emit.dq(arg(node, d), arg(node, d + 1), arg(node, d + 2))
             for d in range(2, len(node.input), 3)]
    y = emit.op("Concat", parts, axis=attr(node, "axis"))
    emit.q(y, arg(node, 0), arg(node, 1), arg(node, 2), node.output[0])


def _softmax_check(node, index, ctx) -> str | None:
    """QLinearSoftmax's `opset` attribute says whose Softmax it is: before 13 the input is
    flattened to 2-D at `axis`, which is Softmax over one axis only where that is the last."""
    rank = ctx.rank(index, arg(node, 0))
    axis = attr(node, "axis", -1)
    if attr(node, "opset", 13) < 13 or ctx.opset < 13:
        if rank is None or axis not in (-1, rank - 1):
            return "Softmax before opset 13 over an axis that is not known to be the last"
    return _plain_check([0], [1, 2, 3, 4], (1, 3))(node, index, ctx)


def _softmax_attrs(node) -> dict:
    return {"axis": int(attr(node, "axis", -1))}


QOPS = [
    _binary("Add"),
    _binary("Mul"),
    _unary("QLinearSigmoid", "Sigmoid"),
    _unary("QLinearLeakyRelu", "LeakyRelu",
           lambda node: {"alpha": float(attr(node, "alpha", 0.01))}),
    QOp(MS, "QLinearGlobalAveragePool", _gap_check, _gap),
    QOp(MS, "QLinearAveragePool", _plain_check([0], [1, 2, 3, 4], (1, 3)), _pool),
    QOp(MS, "QLinearConcat", _concat_check, _concat),
    QOp(MS, "QLinearSoftmax", _softmax_check, _unary("QLinearSoftmax", "Softmax",
                                                     _softmax_attrs).rewrite),
]
