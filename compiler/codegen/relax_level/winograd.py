"""Winograd F(2x2, 3x3): a 3x3 stride-1 conv as transforms around 16 batched GEMMs.

Pattern: `y = conv2d(x, w)` in NHWC/HWIO with a 3x3 constant kernel, stride 1, dilation 1,
one group. Rewrite (Lavin & Gray, "Fast Algorithms for Convolutional Neural Networks"):

    U[4e + f, c, k] = (G w[:, :, c, k] G^T)[e, f]              numpy, at compile time
    V[4e + f, p, c] = (B^T d_p[:, :, c] B)[e, f]                d_p: the 4x4 input tile of p
    M[a, p, k]      = sum_c V[a, p, c] U[a, c, k]               relax.matmul: 16 GEMMs
    y[n, 2i + s, 2j + t, k] = (A^T M[:, p, k] A)[s, t]          p = (n, i, j): 2x2 outputs

with B^T = [[1,0,-1,0],[0,1,1,0],[0,-1,1,0],[0,1,0,-1]], G = [[1,0,0],[.5,.5,.5],[.5,-.5,.5],
[0,0,1]], A^T = [[1,1,1,0],[0,1,-1,-1]]. Each 2x2 output tile takes 16 C x K multiply-adds
instead of 36: 2.25x fewer. The transforms are additions only (B and A hold 0 and +-1), and
each output sums 36 products differently grouped: fp32 results differ from the direct conv's
by rounding, ~1e-6 relative.

The GEMM goes to the reduction rule like a 1x1 conv (U is packed once). The transforms are
injective TE ops, but TVM's FuseOps does not fuse the conv's bias, activation and residual
add into the output transform: it fuses the bias add and activation forward into the next
conv's input transform (whose padded copy reads them), and a residual add with its
activation stays a small elementwise kernel.
Where the map is small the GEMM streams 16/9 times the weights for few tiles; ResNet-18's 7x7
stage (16 tiles, 512 x 512) still ran the whole model 5-6% faster with it than direct, so
`min_tiles` is 16. Smaller maps were not measured and are left direct, as are convs of fewer
than `min_channels` channels: SqueezeNet's 16 -> 64 expand convs gained, at 55x55.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from edgec.compiler.codegen.relax_level.rewrite import bound_constant, op_name, rewrite_functions
from edgec.compiler.passes.report import PassReport

B_T = [[1, 0, -1, 0], [0, 1, 1, 0], [0, -1, 1, 0], [0, 1, 0, -1]]
G = np.array([[1, 0, 0], [0.5, 0.5, 0.5], [0.5, -0.5, 0.5], [0, 0, 1]])
A_T = [[1, 1, 1, 0], [0, 1, -1, -1]]
# TE op names, which the schedules look for
PAD, INPUT, OUTPUT = "winograd_pad", "winograd_input", "winograd_output"


@dataclass(frozen=True)
class WinogradOptions:
    min_tiles: int = 16  # 2x2 output tiles in the map, batch included
    min_channels: int = 16  # input and output channels


DEFAULT = WinogradOptions()  # what the `cpu` pipeline uses; tests of direct convs raise min_tiles


def transform_weights(w: np.ndarray) -> np.ndarray:
    """U[4e + f, c, k] = (G w[:, :, c, k] G^T)[e, f] for an HWIO 3x3 kernel, in float64."""
    u = np.einsum("ei,ijck,fj->efck", G, w.astype(np.float64), G)
    return u.reshape(16, *w.shape[2:])


def _pick(index: Any, exprs: list[Any]) -> Any:
    """exprs[index]; the schedule unrolls `index`, so the selects fold away."""
    from tvm import tirx

    out = exprs[-1]
    for i in range(len(exprs) - 2, -1, -1):
        out = tirx.Select(index == i, exprs[i], out)
    return out


def _combine(row: list[int], terms: list[Any]) -> Any:
    out = None
    for coef, term in zip(row, terms):
        if coef:
            out = term if out is None and coef > 0 else (
                -term if out is None else out + term if coef > 0 else out - term)
    return out


def input_transform(x: Any, pads: tuple[int, int], tiles: tuple[int, int]) -> Any:
    """V[4e + f, p, c] from NHWC `x`, through a zero-padded copy every tile reads in bounds."""
    from tvm import te, tirx

    n_, h_, w_, c_ = (int(d) for d in x.shape)
    th, tw = tiles

    def pad(n: Any, r: Any, s: Any, c: Any) -> Any:
        h, w = r - pads[0], s - pads[1]
        inside = tirx.all(h >= 0, h < h_, w >= 0, w < w_)
        return tirx.if_then_else(inside, x[n, h, w, c], tirx.const(0, x.dtype))

    xp = te.compute((n_, 2 * th + 2, 2 * tw + 2, c_), pad, name=PAD)

    def value(a: Any, p: Any, c: Any) -> Any:
        n, ti, tj = p // (th * tw), p % (th * tw) // tw, p % tw
        rows = [_pick(a % 4, [_combine(r, [xp[n, 2 * ti + i, 2 * tj + j, c] for j in range(4)])
                              for r in B_T]) for i in range(4)]
        return _pick(a // 4, [_combine(r, rows) for r in B_T])

    return te.compute((16, n_ * th * tw, c_), value, name=INPUT)


def output_transform(m: Any, shape: tuple[int, int, int]) -> Any:
    """y[n, h, w, k] (NHWC, `shape` = (n, h, w)) from M[a, p, k]."""
    from tvm import te

    n_, h_, w_ = shape
    th, tw = (h_ + 1) // 2, (w_ + 1) // 2

    def value(n: Any, h: Any, w: Any, k: Any) -> Any:
        p = n * th * tw + h // 2 * tw + w // 2
        cols = [_pick(w % 2, [_combine(r, [m[4 * e + f, p, k] for f in range(4)]) for r in A_T])
                for e in range(4)]
        return _pick(h % 2, [_combine(r, cols) for r in A_T])

    return te.compute((n_, h_, w_, int(m.shape[2])), value, name=OUTPUT)


def _eligible(call: Any, weight: np.ndarray, options: WinogradOptions) -> str | None:
    """Why `call` is not rewritten, or None."""
    attrs = call.attrs
    if (attrs.data_layout, attrs.kernel_layout, attrs.out_layout or "NHWC") != (
            "NHWC", "HWIO", "NHWC"):
        return "layout"
    if [int(s) for s in attrs.strides] != [1, 1] or [int(d) for d in attrs.dilation] != [1, 1]:
        return "stride or dilation"
    if int(attrs.groups) != 1:
        return "grouped"
    if weight.dtype != np.float32:
        return f"{weight.dtype} weights (fp32 only)"
    if min(weight.shape[2:]) < options.min_channels:
        return f"fewer than {options.min_channels} channels"
    return None


def winograd(mod: Any, *, options: WinogradOptions | None = None) -> tuple[Any, PassReport]:
    """`mod` with each eligible conv2d rewritten as Winograd F(2x2, 3x3)."""
    from tvm import relax

    options = options or DEFAULT
    report = PassReport("winograd F(2x2,3x3)")

    @relax.expr_functor.mutator
    class Rewrite(relax.PyExprMutator):
        def visit_call_(self, call: Any) -> Any:
            call = super().visit_call_(call)
            if op_name(call) != "relax.nn.conv2d":
                return call
            x, w = call.args
            weight = bound_constant(self, w)
            try:
                n, h, wd, c = (int(d) for d in x.ty.shape.values)
                _, ho, wo, k = (int(d) for d in call.ty.shape.values)
            except (TypeError, AttributeError):
                return call  # symbolic shapes
            if weight is None or weight.shape[:2] != (3, 3):
                return call  # not this pass's pattern: nothing to report
            why = _eligible(call, weight, options)
            tiles = ((ho + 1) // 2, (wo + 1) // 2)
            if why is None and n * tiles[0] * tiles[1] < options.min_tiles:
                why = f"{n * tiles[0] * tiles[1]} tiles, under {options.min_tiles}"
            key = f"{h}x{wd}x{c}->{k}"
            if why is not None:
                report.decline(key, why)
                return call
            pads = (int(call.attrs.padding[0]), int(call.attrs.padding[1]))
            u = transform_weights(weight).astype(weight.dtype)
            v = self.builder_.emit_te(input_transform, x, pads, tiles,
                                      primfunc_name_hint=INPUT)
            m = self.builder_.emit(relax.op.matmul(v, relax.const(u)))
            report.count(f"conv {key}")
            return self.builder_.emit_te(output_transform, m, (n, ho, wo),
                                         primfunc_name_hint=OUTPUT)

    return relax.transform.DeadCodeElimination()(rewrite_functions(Rewrite(mod), mod)), report
