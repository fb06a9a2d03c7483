"""separable: a standard KxK conv as a depthwise KxK conv and a 1x1 conv (network decoupling).

Pattern: a 2-D Conv with group 1, a kernel of K = kH * kW > 1 taps and constant weights W
[N, C, kH, kW] (bias optional). Math: for each input channel c, W[:, c] reshaped N x K is
U S V^T (SVD). Keeping the first T terms, W[n, c, :] ~ sum_t U[n, t] S[t] V[t, :]: a depthwise
conv (group C, C*T outputs; output c*T + t filters input c with V[t] reshaped kH x kW, with
the conv's strides, pads and dilations) and then a 1x1 conv whose weight at [n, c*T + t] is
U[n, t] S[t], carrying the bias. At T = min(N, K) the pair equals the conv up to float
rounding; below it, it keeps the terms with the largest singular values of every channel.
MACs against the dense conv: T/N + T/K. This is the `grouped` rewrite with one group per
input channel (grouped.py, lowrank.py).

Options (`SeparableOptions`): `rank` T, or `energy`, the share of each channel's sum of S^2
to keep (T is then the most any channel needs); neither: full rank (exact). `only_cheaper`
declines a conv whose pair would not have fewer MACs. Lossy below full rank: judged by
accuracy on data (edgec validate, edgec compress), not by a tolerance.
"""

from __future__ import annotations

from dataclasses import dataclass

import onnx

from .grouped import GroupedOptions, lowrank_pass
from .report import PassReport


@dataclass(frozen=True)
class SeparableOptions:
    rank: int | None = None  # terms per input channel; None: from `energy`, else full rank
    energy: float | None = None  # share of each channel's sum of S^2 to keep, in (0, 1]
    only_cheaper: bool = True  # decline where the pair has as many MACs as the conv or more


def separable(model: onnx.ModelProto,
              options: SeparableOptions | None = None) -> tuple[onnx.ModelProto, PassReport]:
    opts = options or SeparableOptions()
    report = PassReport("separable")
    per_channel = GroupedOptions(rank=opts.rank, energy=opts.energy,
                                 only_cheaper=opts.only_cheaper)
    out = lowrank_pass(model, report, "conv->depthwise+1x1", lambda w: w.shape[1], per_channel,
                       min_taps=2)
    return out, report
