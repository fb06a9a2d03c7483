"""qoperator: rewrite QOperator-form quantized nodes into their QDQ definitions, exactly.

TVM imports QuantizeLinear (Q) and DequantizeLinear (DQ) but not the QOperator form. Each op
below is defined by the QDQ graph it becomes; DQ(q, s, z) = (q - z) * s and
Q(r, s, z) = saturate(round_half_even(r / s) + z) in z's type, per tensor unless an axis is
named (weights: one scale per output channel, DQ axis 0 for conv weights, the column axis
for a matmul's right operand).

- QLinearConv(x, xs, xz, w, ws, wz, ys, yz, B) = Q(Conv(DQ(x, xs, xz), DQ(w, ws, wz, axis 0),
  B * xs * ws as a float32 bias), ys, yz), the Conv with the node's attributes. The int32 bias
  is defined at scale xs * ws with zero point 0; padding cells hold xz, i.e. real 0, as the
  Conv's zero padding does.
- QLinearMatMul(a, as, az, b, bs, bz, ys, yz) = Q(MatMul(DQ(a), DQ(b, axis last)), ys, yz).
- QGemm(A, as, az, B, bs, bz, C, ys, yz; alpha, transA, transB) = Q(Gemm(DQ(A), DQ(B, axis
  of N), C * alpha * as * bs; alpha, beta 1), ys, yz); without ys the Gemm's float output is
  the result.
- ConvInteger / MatMulInteger(x, w, xz, wz) = Cast<int32>(Round(Conv / MatMul((x - xz),
  (w - wz)))) with the differences as float32 (DQ at scale 1, which computes exactly that).
  Exact while every product and partial sum is an integer below 2^24 in magnitude: the pass
  bounds |sum| <= max over outputs of sum |w - wz| * max |x - xz| from the constant weights
  and the input type's range (the type's full span where xz is a runtime scalar, as
  DynamicQuantizeLinear makes it), and declines where the bound reaches 2^24 or the weights
  or their zero points are not constants. (A declined MatMulInteger stays for TVM's own int32
  import; a declined ConvInteger is named unsupported.) Round keeps the result exact under a
  backend whose float conv is not exact to the last bit (Winograd), while its error stays
  below 1/2.
- com.microsoft QLinearAdd / QLinearMul(A, As, Az, B, Bs, Bz, Cs, Cz) =
  Q(DQ(A) + DQ(B) / DQ(A) * DQ(B), Cs, Cz); QLinearSigmoid / QLinearLeakyRelu(X, Xs, Xz, Ys,
  Yz; alpha) = Q(Sigmoid / LeakyRelu(DQ(X)), Ys, Yz); QLinearSoftmax = Q(Softmax(DQ(X); axis))
  (its `opset` attribute before 13 means the 2-D flattening Softmax: taken only where the axis
  is the last); QLinearConcat(Ys, Yz, X1, X1s, X1z, ...; axis) = Q(Concat(DQ(X1), ...), Ys,
  Yz); QLinearGlobalAveragePool / QLinearAveragePool(X, Xs, Xz, Ys, Yz) = Q(pool(DQ(X)), Ys,
  Yz), where channels_last=1 means X is [N, spatial..., C]: the pool runs between Transposes
  to channels first and back. Absent zero points of these ops are 0 of X's type.

Exact means equal to the definition above. onnxruntime's QLinear kernels compute the integer
sum exactly and requantize it with a fixed-point or float multiplier xs * ws / ys, where the
QDQ graph rounds each float32 product and sum: the two agree except where the scaled sum lies
within that rounding of a half-integer, where they differ by one quantization step.

Declines, leaving the node: a scale or zero point that is not a constant (the bias needs
them) other than ConvInteger's and MatMulInteger's input zero point; a per-tensor one that
holds several values; per-axis scales before opset 13, a
non-constant bias, a missing zero point whose quantized type is unknown. Remaining
QOperator ops and unknown com.microsoft ops are then named unsupported by the frontend.
The com.microsoft opset import is dropped once no node uses the domain; the int32 biases
the float ones replaced are dropped with what else nothing reads.
"""

from __future__ import annotations

import onnx

from .graph import GraphIndex, tidy
from .qoperator_base import MS, Emit, QContext, QOp
from .qoperator_contrib import QOPS as _CONTRIB
from .qoperator_linear import QOPS as _LINEAR
from .report import PassReport
from .rules import Rule, apply_rules

QOPS: dict[tuple[str, str], QOp] = {(q.domain, q.op_type): q for q in [*_LINEAR, *_CONTRIB]}


def _key(node: onnx.NodeProto) -> tuple[str, str]:
    return ("" if node.domain == "ai.onnx" else node.domain, node.op_type)


def _rule(ctx: QContext, qop: QOp) -> Rule:
    def match(node: onnx.NodeProto, index: GraphIndex) -> bool:
        return _key(node) == (qop.domain, qop.op_type)

    def check(node: onnx.NodeProto, index: GraphIndex) -> str | None:
        if len(node.output) != 1:
            return f"{len(node.output)} outputs"
        return qop.check(node, index, ctx)

    def rewrite(node: onnx.NodeProto, index: GraphIndex) -> str:
        emit = Emit(ctx.graph, node, ctx, index)
        qop.rewrite(node, index, ctx, emit)
        emit.commit()
        return qop.op_type

    return Rule(f"{qop.op_type} -> QDQ", match, check, rewrite)


def qoperator(model: onnx.ModelProto) -> tuple[onnx.ModelProto, PassReport]:
    """Rewrite every QOperator node that passes its check (module docstring); the report counts
    rewrites by op type and keeps each declined node's reason."""
    report = PassReport("qoperator")
    if not any(_key(n) in QOPS for n in model.graph.node):
        return model, report
    out = onnx.ModelProto()
    out.CopyFrom(model)
    ctx = QContext(out)
    apply_rules(out.graph, [_rule(ctx, q) for q in QOPS.values()], report,
                anchors=lambda n: _key(n) in QOPS)
    if report.changed:
        tidy(out.graph)
        if not any(n.domain == MS for n in out.graph.node):
            keep = [o for o in out.opset_import if o.domain != MS]
            del out.opset_import[:]
            out.opset_import.extend(keep)
    return out, report
