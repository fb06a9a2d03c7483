"""Which layers run in int8: per-layer sensitivity, then the fewest fp32 layers that meet
the budget.

Sensitivity: each layer alone in int8 (its input, output and weights quantized, the rest fp32),
its noise on the model's outputs over SENSITIVITY_SAMPLES held-out samples (scored by
compress.score: noise share, top-1 agreement). The search orders the layers from most to
least sensitive and finds the smallest k such that the model with the first k kept in fp32
and the rest in int8 stays within --max-accuracy-drop on all held-out samples. It bisects k,
taking the drop to grow with the layers quantized, and measures every model it decides on.
k = all layers means nothing fits: the model stays fp32 and the caller warns.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import onnx

from ..compress.score import Score, Scorer
from .layers import Layer

Build = Callable[[list[Layer]], onnx.ModelProto]


@dataclass
class Choice:
    int8: list[Layer]
    score: Score
    fp32: dict[str, str] = field(default_factory=dict)  # layer -> why it stays fp32
    tried: list[dict] = field(default_factory=list)  # every model measured: fp32 count, drop


def sensitivity(layers: list[Layer], build: Build, scorer: Scorer) -> dict[str, float]:
    """Noise share on the model's outputs with each layer alone in int8."""
    return {la.name: scorer.score(build([la])).noise for la in layers}


def choose(layers: list[Layer], sens: dict[str, float], build: Build, scorer: Scorer,
           budget: float) -> Choice:
    """The most layers in int8 (least sensitive first) whose model is within `budget`."""
    order = sorted(layers, key=lambda la: -sens[la.name])
    scores: dict[int, Score] = {}

    def measure(k: int) -> Score:
        if k not in scores:
            scores[k] = scorer.original if k == len(order) else scorer.score(
                build([la for la in layers if la not in order[:k]]))
        return scores[k]

    lo, hi = -1, len(order)  # measure(hi) is within the budget; measure(lo) is not, or lo < 0
    if measure(0).drop <= budget:
        hi = 0
    else:
        lo = 0
        while hi - lo > 1:
            mid = (lo + hi) // 2
            lo, hi = (lo, mid) if measure(mid).drop <= budget else (mid, hi)
    kept = order[:hi]
    why = {la.name: f"among the {hi} most sensitive layers kept in fp32 to meet the budget "
                    f"({budget:g} points)" for la in kept}
    tried = [{"fp32_layers": k, "drop": s.drop, "noise": s.noise, "chosen": k == hi}
             for k, s in sorted(scores.items())]
    return Choice([la for la in layers if la not in kept], measure(hi), why, tried)

