"""exp on CPUs as arithmetic the vectorizer keeps in vectors: a lowering rule for `tirx.exp`.

TVM lowers `exp` on LLVM targets to LLVM's `llvm.exp` intrinsic, which LLVM turns into one
call to libm's scalar `expf` per element: a vectorized SiLU (x * sigmoid(x)), sigmoid or
softmax epilogue is taken apart lane by lane around each call (an EfficientNet-style export
made 1,422 such calls and ran at 2x onnxruntime's time). This module registers, for LLVM
targets (x86 and ARM alike), a lowering of float32 `exp` into operations LLVM vectorizes
(floor, multiply-add, integer shift, bit cast), the classic range reduction:

    x = clamp(x, LO, HI)
    n = floor(x * log2(e) + 1/2)                  the nearest integer to x / ln 2
    r = x - n * LN2_HI - n * LN2_LO               |r| <= ln(2)/2, ln 2 split so n * LN2_HI is exact
    exp(r) = 1 + r + r^2 * P(r)                   P: degree-5 minimax polynomial (Cephes expf)
    exp(x) = exp(r) * 2^n,  2^n = bits((n + 127) << 23)

Error: within 2 ulp of the true value on [LO, HI] (tests/test_fast_exp.py checks it against
numpy's exp). LO keeps 2^n a normal number (exp(LO) = 1.2e-38, below which the result is that
value, not the true denormal); HI keeps n <= 127 (exp(88) = 1.65e38; beyond, 1.65e38, not
inf). Sigmoid (1 / (1 + exp(-x))), softmax (inputs <= 0 after the max is subtracted) and SiLU
stay within a few ulp.

TVM legalizes `sigmoid` into 1 / (1 + exp(-x)) before this rule, so sigmoid is covered too.
The rule is process-wide (TVM's op registry); `register()` is idempotent.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

LO, HI = -87.33654, 88.0
LOG2E = 1.44269504088896341
LN2_HI, LN2_LO = 0.693359375, -2.12194440e-4
# exp(r) = 1 + r + r^2 * P(r), P's coefficients from the highest degree down
POLY = (1.9875691500e-4, 1.3981999507e-3, 8.3334519073e-3, 4.1665795894e-2,
        1.6666665459e-1, 5.0000001201e-1)
LEVEL = 99  # above TVM's own llvm rule (level 10)

_tvm_rules: dict[str, Any] = {}  # TVM's own llvm rule per op, for the types ours leave alone


def splat(value: float | int, element: str, lanes: int) -> Any:
    """`value` as a scalar of `element` type, or broadcast to `lanes` lanes."""
    from tvm import tirx

    scalar = tirx.const(value, element)
    return scalar if lanes == 1 else tirx.Broadcast(scalar, lanes)


def exp_f32(x: Any) -> Any:
    """The expression for exp(x), x float32 (scalar or vector), as the module docstring."""
    import tvm
    from tvm import tirx

    lanes = tvm.DataType(str(x.ty)).lanes
    f = lambda v: splat(v, "float32", lanes)  # noqa: E731
    i = lambda v: splat(v, "int32", lanes)  # noqa: E731
    x = tirx.Max(tirx.Min(x, f(HI)), f(LO))
    n = tirx.floor(x * f(LOG2E) + f(0.5))
    r = x - n * f(LN2_HI) - n * f(LN2_LO)
    p = f(POLY[0])
    for coef in POLY[1:]:
        p = p * r + f(coef)
    body = p * r * r + r + f(1.0)
    biased = tirx.Cast("int32" if lanes == 1 else f"int32x{lanes}", n) + i(127)
    return body * tirx.reinterpret(str(x.ty), tirx.shift_left(biased, i(23)))


def register_float32(op: str, rewrite: Callable[[Any], Any]) -> None:
    """Lower `tirx.<op>` on LLVM targets by `rewrite(x)` for float32 calls, by TVM's own rule
    for any other type (once per process and op)."""
    if op in _tvm_rules:
        return
    import tvm
    from tvm.tirx.op import register_intrin_lowering

    _tvm_rules[op] = tvm.ir.Op.get(f"tirx.{op}").get_attr("llvm.FLowerIntrinsic")

    def lower(call: Any) -> Any:
        dtype = tvm.DataType(str(call.ty))
        if dtype.type_code != tvm.DataTypeCode.FLOAT or dtype.bits != 32:
            return _tvm_rules[op](call)
        return rewrite(call.args[0])

    register_intrin_lowering(f"tirx.{op}", "llvm", f=lower, level=LEVEL)


def register() -> None:
    """Install the rule for LLVM targets (once per process)."""
    register_float32("exp", exp_f32)
