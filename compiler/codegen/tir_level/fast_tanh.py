"""tanh on CPUs as one rational function the vectorizer keeps in vectors: a lowering rule for
`tirx.tanh`.

TVM lowers float32 `tanh` on LLVM targets to select(x >= 0, (1 - e^-2x) / (1 + e^-2x),
(e^2x - 1) / (e^2x + 1)): two exps and two divisions per element, both branches evaluated.
In a LeNet-style conv epilogue that was about 60 instructions per element, half of the
model's instructions on a Cortex-A72. This module registers, for LLVM targets, the odd
rational approximation

    c = clamp(x, -CLAMP, CLAMP)
    tanh(x) = c * P(c^2) / Q(c^2)        P: degree 6, Q: degree 3 (in c^2)

with the coefficients of Eigen's `generic_fast_tanh_float` (a minimax fit on [-CLAMP, CLAMP],
where tanh(CLAMP) rounds to 1 - 2^-22): multiply-adds and one division, no branch. Error:
within 8 ulp and 4e-7 absolute of the true value everywhere (tests/test_fast_tanh.py checks
it against numpy's tanh in float64), odd and monotone through 0 where the quotient's leading
terms agree to 1.3e-7. Outside the clamp the result is +-0.99999976.

The rule is process-wide (TVM's op registry); `register()` is idempotent.
"""

from __future__ import annotations

from typing import Any

from .fast_exp import register_float32, splat

CLAMP = 7.90531110763549805
# P and Q, from the highest power of c^2 down
NUMERATOR = (-2.76076847742355e-16, 2.00018790482477e-13, -8.60467152213735e-11,
             5.12229709037114e-08, 1.48572235717979e-05, 6.37261928875436e-04,
             4.89352455891786e-03)
DENOMINATOR = (1.19825839466702e-06, 1.18534705686654e-04, 2.26843463243900e-03,
               4.89352518554385e-03)


def _horner(coefficients: tuple[float, ...], z: Any, f: Any) -> Any:
    p = f(coefficients[0])
    for coef in coefficients[1:]:
        p = p * z + f(coef)
    return p


def tanh_f32(x: Any) -> Any:
    """The expression for tanh(x), x float32 (scalar or vector), as the module docstring."""
    import tvm
    from tvm import tirx

    lanes = tvm.DataType(str(x.ty)).lanes
    f = lambda v: splat(v, "float32", lanes)  # noqa: E731
    c = tirx.Max(tirx.Min(x, f(CLAMP)), f(-CLAMP))
    z = c * c
    return c * _horner(NUMERATOR, z, f) / _horner(DENOMINATOR, z, f)


def register() -> None:
    """Install the rule for LLVM targets (once per process)."""
    register_float32("tanh", tanh_f32)
