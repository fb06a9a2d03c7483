"""Which rank each conv gets: candidates, per-layer sensitivity, and the budgeted choice.

Candidates (`candidates`): per conv, the forms the user allows, `grouped` (g = 1, 2, 4
groups: channel decomposition and grouped low rank) and `separable` (g = C), at ranks whose
channel count g*r is a multiple of the target's vector lanes (halved until there are a few
choices), with fewer MACs than the dense conv.

Sensitivity (`sensitivity`): each candidate alone, data-aware on the original prefix, in the
otherwise original model, run on held-out samples: its noise is sum |out - ref|^2 / sum |ref|^2
over the outputs (1 / SQNR). Noise from different layers roughly adds, so a plan's cost and
noise are sums over its layers.

Choice (`lagrangian_plans`, `choose`): for a multiplier lam, each layer independently takes the
candidate (or dense) that minimizes cost + lam * noise * dense MACs of the model, the cost being
its MACs over its form's efficiency (speed.EFFICIENCY, a depthwise MAC costs more than a dense
one); sweeping lam gives plans from cheapest to exact. `choose` bisects that list with the real
test, the sequentially fitted model's accuracy drop on held-out data, for the cheapest plan
within the budget (or, with a MACs target, the most accurate plan at or under it).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import onnx

from edgec.compiler.passes.graph import GraphIndex
from edgec.compiler.passes.lowrank import full_rank, macs_ratio, replace

from .fit import LayerPlan, MomentCache, Plan, fit_layer
from .speed import EFFICIENCY

MAX_CANDIDATES = 6  # ranks per form and group count
LAMBDAS = np.logspace(-4, 6, 61)


@dataclass(frozen=True)
class Layer:
    name: str
    shape: tuple[int, int, int, int]  # weights N, C, kH, kW
    pixels: int  # output pixels per inference

    @property
    def macs(self) -> int:
        return int(np.prod(self.shape)) * self.pixels

    def plan_macs(self, plan: LayerPlan | None) -> int:
        return self.macs if plan is None else round(
            self.macs * macs_ratio(self.shape, plan.groups, plan.rank))

    def plan_cost(self, plan: LayerPlan | None) -> float:
        """Modelled time, in dense-conv MACs: MACs over the form's efficiency (speed.py)."""
        return self.macs if plan is None else (
            self.plan_macs(plan) / EFFICIENCY[plan.form(self.shape[1])])


def _ranks(full: int, step: int, ok: Callable[[int], bool]) -> list[int]:
    while True:
        ranks = [r for r in range(step, full, step) if ok(r)]
        if len(ranks) >= 3 or step == 1:
            break
        step = max(1, step // 2)
    if len(ranks) > MAX_CANDIDATES:
        pick = np.unique(np.round(np.linspace(0, len(ranks) - 1, MAX_CANDIDATES)).astype(int))
        ranks = [ranks[i] for i in pick]
    return ranks


def candidates(layer: Layer, forms: list[str], lanes: int) -> list[LayerPlan]:
    """The plans tried for `layer`: each allowed form at ranks rounded to `lanes`."""
    n, c, kh, kw = layer.shape
    groups = ([g for g in (1, 2, 4) if c % g == 0 and c // g >= 4] if "grouped" in forms
              else [])
    if "separable" in forms and kh * kw > 1 and c > 4:
        groups.append(c)
    out = []
    for g in groups:
        step = max(1, lanes // g) if g < c else 1
        cheap = lambda r, g=g: macs_ratio(layer.shape, g, r) < 0.9  # noqa: E731
        out += [LayerPlan(g, r) for r in _ranks(full_rank(layer.shape, g), step, cheap)]
    return out


def with_layer(model: onnx.ModelProto, name: str, plan: LayerPlan,
               cache: MomentCache) -> onnx.ModelProto:
    """`model` (the original) with only conv `name` replaced, fitted on the original prefix."""
    out = onnx.ModelProto.FromString(model.SerializeToString())
    index = GraphIndex(out.graph)
    node = next(n for n in out.graph.node if n.name == name)
    w = index.const(node.input[1])
    bias = index.const(node.input[2]) if len(node.input) > 2 and node.input[2] else None
    replace(out.graph, node, fit_layer(w, bias, plan, cache.get(node, w.shape[2:])))
    return out


def sensitivity(model: onnx.ModelProto, layers: list[Layer], plans: dict[str, list[LayerPlan]],
                cache: MomentCache, noise: Callable[[onnx.ModelProto], float],
                tick: Callable[[], None] = lambda: None) -> dict[tuple[str, LayerPlan], float]:
    """Noise of every candidate alone."""
    out = {}
    for layer in layers:
        for plan in plans[layer.name]:
            out[(layer.name, plan)] = noise(with_layer(model, layer.name, plan, cache))
            tick()
    return out


def lagrangian_plans(layers: list[Layer], sens: dict[tuple[str, LayerPlan], float]
                     ) -> list[Plan]:
    """Distinct plans, cheapest first, each optimal for some multiplier of noise against MACs."""
    total = sum(layer.macs for layer in layers)
    per_layer: dict[str, list[tuple[LayerPlan, float]]] = {}
    for (name, cand), err in sens.items():
        per_layer.setdefault(name, []).append((cand, err))
    seen, out = set(), []
    for lam in LAMBDAS:
        plan: Plan = {}
        for layer in layers:
            best, best_cost = None, float(layer.macs)
            for cand, err in per_layer.get(layer.name, []):
                cost = layer.plan_cost(cand) + lam * err * total
                if cost < best_cost:
                    best, best_cost = cand, cost
            if best is not None:
                plan[layer.name] = best
        key = tuple(sorted(plan.items(), key=lambda kv: kv[0]))
        if key not in seen:
            seen.add(key)
            out.append(plan)
    return sorted(out, key=lambda p: sum(la.plan_cost(p.get(la.name)) for la in layers))


def plan_macs(layers: list[Layer], plan: Plan) -> int:
    return sum(layer.plan_macs(plan.get(layer.name)) for layer in layers)


def choose(plans: list[Plan], drop: Callable[[Plan], float], budget: float,
           layers: list[Layer], target_macs: int | None = None
           ) -> tuple[Plan | None, dict[int, float]]:
    """The cheapest plan whose measured drop is within `budget` (bisecting, as the drop falls
    with MACs), or with `target_macs` the most accurate plan at or under it; None when no plan
    is within budget. Also returns the drop measured for each plan tried (by index)."""
    tried: dict[int, float] = {}

    def ok(i: int) -> bool:
        if i not in tried:
            tried[i] = drop(plans[i])
        return tried[i] <= budget

    if target_macs is not None:
        under = [i for i, p in enumerate(plans) if plan_macs(layers, p) <= target_macs]
        return (plans[under[-1]] if under and ok(under[-1]) else None), tried
    lo, hi = 0, len(plans) - 1
    if not plans or not ok(hi):
        return None, tried
    while lo < hi:
        mid = (lo + hi) // 2
        if ok(mid):
            hi = mid
        else:
            lo = mid + 1
    return plans[hi], tried
