"""Low-rank factors of a conv's weights, shared by the `separable` and `grouped` passes and by
`edgec compress`: the math and the two-conv rewrite, no pass of its own.

W [N, C, kH, kW] with its C input channels split into g groups of C/g consecutive channels.
Group j's slice W_j is N x d (d = C/g * kH * kW, flattened channel-major as ONNX stores it).
Rank r: W_j ~ A_j B_j with A_j N x r and B_j r x d, from the SVD W_j = U S V^T (A_j = U_r S_r,
B_j = V_r^T). The pair of convs computing it:
  first   KxK conv, group g, C -> g*r channels, weights B stacked [g*r, C/g, kH, kW], the
          original strides, pads and dilations, no bias;
  second  1x1 conv, g*r -> N channels, weights [A_1 .. A_g] as [N, g*r, 1, 1], the bias.
MACs per output pixel: r*C*kH*kW + N*g*r against N*C*kH*kW. g = 1 is channel decomposition,
g = C the separable form (depthwise with channel multiplier r, then 1x1). At r = min(N, d)
the pair equals W up to float rounding.

Data-aware (`roots` given, by `whitening`): with M_j = E[p_j p_j^T], the second moment of
group j's input patches, the SVD is of W_j M_j^1/2 = U S V^T and B_j = V_r^T M_j^-1/2: the
rank-r error is then smallest on the inputs the layer sees, not on all inputs alike
(eigenvalues of M_j below EIG_FLOOR of its largest are raised to it, the same in both roots,
so the product stays W_j at full rank). `refit` then solves the second conv and the bias by
ridge least squares so that the pair, fed its actual inputs, reproduces the original
layer's outputs y:
  [A b] = argmin E||y - A z - b||^2 + ridge * tr(E[z z^T]) / (g*r) * ||A - A0||^2,  z = B p,
with A0 the factors' own second conv.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx
from onnx import helper

from .graph import set_const, unique_name

EIG_FLOOR = 1e-6
FACTOR_MARK = "edgec: low-rank factor"  # doc_string of the convs `replace` makes


@dataclass(frozen=True)
class Factors:
    first: np.ndarray  # [g*r, C/g, kH, kW]
    second: np.ndarray  # [N, g*r, 1, 1]
    bias: np.ndarray | None  # [N]
    groups: int
    rank: int


def full_rank(shape: tuple[int, ...], groups: int) -> int:
    """The rank at which the grouped pair of a conv of weights `shape` is exact."""
    n, c, kh, kw = shape
    return min(n, c // groups * kh * kw)


def macs_ratio(shape: tuple[int, ...], groups: int, rank: int) -> float:
    """MACs of the pair over those of the dense conv."""
    n, c, kh, kw = shape
    return (rank * c * kh * kw + n * groups * rank) / (n * c * kh * kw)


def _root(m: np.ndarray, shrink: float) -> tuple[np.ndarray, np.ndarray]:
    """S^1/2 and S^-1/2 of S = (1 - shrink) M + shrink * mean eigenvalue * I, for a symmetric
    PSD M, eigenvalues floored alike."""
    lam, q = np.linalg.eigh(m)
    lam = (1 - shrink) * lam + shrink * max(float(np.mean(lam)), 1e-30)
    lam = np.maximum(lam, EIG_FLOOR * max(float(lam.max()), 1e-30))
    return (q * np.sqrt(lam)) @ q.T, (q / np.sqrt(lam)) @ q.T


def whitening(moment: np.ndarray, groups: int, rows: int | None = None
              ) -> list[tuple[np.ndarray, np.ndarray]]:
    """(M_j^1/2, M_j^-1/2) of each group's diagonal block of `moment` (d_all x d_all), an
    estimate from `rows` samples (None: exact), shrunk toward a multiple of I by
    d / (d + rows) (Ledoit-Wolf style): from fewer rows than its size the moment has
    directions no sample reached, which M^-1/2 would otherwise blow up on new inputs."""
    d = moment.shape[0] // groups
    shrink = 0.0 if rows is None else d / (d + rows)
    return [_root(moment[j * d:(j + 1) * d, j * d:(j + 1) * d], shrink) for j in range(groups)]


def factor(w: np.ndarray, groups: int, rank: int, bias: np.ndarray | None = None,
           roots: list[tuple[np.ndarray, np.ndarray]] | None = None) -> Factors:
    """The rank-`rank` pair of conv weights `w` in `groups` groups; `roots` (`whitening` of
    the input patches' moment) makes it data-aware."""
    n, c, kh, kw = w.shape
    d = c // groups * kh * kw
    if not 1 <= rank <= full_rank(w.shape, groups):
        raise ValueError(f"rank {rank} outside 1..{full_rank(w.shape, groups)}")
    slices = w.astype(np.float64).reshape(n, groups, d).transpose(1, 0, 2)  # [g, N, d]
    if roots is None:
        u, s, vt = np.linalg.svd(slices, full_matrices=False)
        b = vt[:, :rank, :]
    else:
        b = np.empty((groups, rank, d))
        u = np.empty((groups, n, rank))
        s = np.empty((groups, rank))
        for j, (half, inv_half) in enumerate(roots):
            uj, sj, vtj = np.linalg.svd(slices[j] @ half, full_matrices=False)
            u[j], s[j], b[j] = uj[:, :rank], sj[:rank], vtj[:rank] @ inv_half
    a = u[:, :, :rank] * s[:, None, :rank]  # [g, N, r]
    return Factors(first=b.reshape(groups * rank, c // groups, kh, kw).astype(w.dtype),
                   second=a.transpose(1, 0, 2).reshape(n, groups * rank, 1, 1).astype(w.dtype),
                   bias=bias, groups=groups, rank=rank)


def project(f: Factors) -> np.ndarray:
    """The first conv as one (g*r) x (C*kH*kW) matrix over whole patches (block diagonal)."""
    gr, cg, kh, kw = f.first.shape
    d = cg * kh * kw
    out = np.zeros((gr, f.groups * d))
    for j in range(f.groups):
        rows = slice(j * f.rank, (j + 1) * f.rank)
        out[rows, j * d:(j + 1) * d] = f.first[rows].reshape(f.rank, d)
    return out


def refit(f: Factors, moment: np.ndarray, cross: np.ndarray, ridge: float = 1e-3) -> Factors:
    """Solve the second conv and bias by ridge least squares, pulled toward the factors' own
    second conv A0 (not toward 0): argmin E||y - A z - b||^2 + lam ||A - A0||^2. `moment` is
    E[p~ p~^T] over patches with a trailing 1 (d_all + 1 square), `cross` is E[p~ y^T]
    ((d_all + 1) x N); lam = ridge * tr(E[z z^T]) / (g*r)."""
    b = project(f)
    gr = b.shape[0]
    bt = np.zeros((gr + 1, b.shape[1] + 1))
    bt[:gr, :-1], bt[gr, -1] = b, 1.0
    zz, zy = bt @ moment @ bt.T, bt @ cross  # E[z~ z~^T], E[z~ y^T]
    reg = np.zeros(gr + 1)
    reg[:gr] = ridge * max(float(np.trace(zz[:gr, :gr])) / gr, 1e-30)
    prior = np.zeros_like(zy)
    prior[:gr] = f.second.reshape(f.second.shape[0], gr).T.astype(np.float64)
    sol = np.linalg.solve(zz + np.diag(reg), zy + reg[:, None] * prior)  # [(g*r) + 1, N]
    n = f.second.shape[0]
    return Factors(f.first, sol[:gr].T.reshape(n, gr, 1, 1).astype(f.second.dtype),
                   sol[gr].astype(f.second.dtype), f.groups, f.rank)


def replace(graph: onnx.GraphProto, node: onnx.NodeProto, f: Factors) -> None:
    """Replace conv `node` by the pair of `f` (the second conv keeps the node's outputs)."""
    base = node.name or node.output[0]
    first_w = set_const(graph, unique_name(graph, f"{base}_lr1_weight"), f.first)
    second_w = set_const(graph, unique_name(graph, f"{base}_lr2_weight"), f.second)
    inputs = [unique_name(graph, f"{base}_lr1_out"), second_w]
    if f.bias is not None:
        inputs.append(set_const(graph, unique_name(graph, f"{base}_lr2_bias"), f.bias))
    elif len(node.input) > 2 and node.input[2]:
        inputs.append(node.input[2])
    first = helper.make_node("Conv", [node.input[0], first_w], inputs[:1], name=f"{base}_lr1",
                             group=f.groups)
    first.attribute.extend(a for a in node.attribute if a.name not in ("group", "kernel_shape"))
    first.attribute.append(helper.make_attribute("kernel_shape", list(f.first.shape[2:])))
    second = helper.make_node("Conv", inputs, list(node.output), name=f"{base}_lr2",
                              kernel_shape=[1, 1])
    first.doc_string = second.doc_string = FACTOR_MARK
    at = next(i for i, n in enumerate(graph.node) if n is node)
    del graph.node[at]
    graph.node.insert(at, second)
    graph.node.insert(at, first)

