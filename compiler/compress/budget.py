"""The choice under the accuracy budget, with the latency check: what compress's search and
write phases decide, on the state they share (`Run`).

`search` scores every candidate alone, then chooses a plan (search.lagrangian_plans and
search.choose, each plan measured once on the held-out samples); with the latency check a
rewrite the target does not run faster bans its form for that layer and the choice is made
again, LATENCY_ROUNDS times at most. `final` keeps the plan or, over budget, leaves the model
dense; every conv left dense says why.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import onnx

from ..passes.graph import GraphIndex
from .fit import LayerPlan, MomentCache, Plan, build
from .options import FORMS, CompressOptions
from .score import Score, Scorer, sqnr_db
from .search import Layer, candidates, choose, lagrangian_plans, plan_macs, sensitivity
from .speed import Decision, measured, modelled

LATENCY_ROUNDS = 3


@dataclass
class Run:
    """What the phases share."""

    base: onnx.ModelProto
    layers: list[Layer]
    shapes: dict[str, list[int]]
    scorer: Scorer  # all held-out samples: the budget
    quick: Scorer  # the first SENSITIVITY_SAMPLES of them: noise of each candidate alone
    cache: MomentCache
    seconds: dict[str, float] = field(default_factory=dict)
    t: float = field(default_factory=time.perf_counter)
    measured: dict[tuple, Score] = field(default_factory=dict)

    def done(self, phase: str) -> None:
        now = time.perf_counter()
        self.seconds[phase] = round(now - self.t, 2)
        self.t = now

    def measure(self, plan: Plan) -> Score:
        """The held-out score of the model built from `plan` (each plan built once)."""
        key = tuple(sorted(plan.items()))
        if key not in self.measured:
            self.measured[key] = (self.scorer.score(build(self.base, plan, self.cache))
                                  if plan else self.scorer.original)
        return self.measured[key]


def _choose(run: Run, sens: dict, opts: CompressOptions, banned: set[tuple[str, str]],
            curve: int = 0) -> tuple[Plan | None, list[dict[str, Any]]]:
    """The plan chosen among candidates of forms not banned per layer (None: no plan within
    budget), and the plans measured on the way (`curve` more, evenly spread)."""
    shape = {layer.name: layer.shape for layer in run.layers}
    allowed = {k: v for k, v in sens.items() if (k[0], k[1].form(shape[k[0]][1])) not in banned}
    plans = lagrangian_plans(run.layers, allowed)
    total = sum(layer.macs for layer in run.layers)
    target = round(opts.flops * total) if opts.flops else None
    plan, tried = choose(plans, lambda p: run.measure(p).drop, opts.max_accuracy_drop,
                         run.layers, target)
    extra = np.linspace(0, len(plans) - 1, curve).astype(int) if curve else []
    points = []
    for i in sorted(set(tried) | {int(i) for i in extra}):
        score = run.measure(plans[i])
        points.append({"macs": plan_macs(run.layers, plans[i]), "drop": score.drop,
                       "sqnr_db": sqnr_db(score.noise), "chosen": plans[i] is plan})
    return plan, points



@dataclass
class Found:
    """What the search found: the plan (None: no plan within budget), each candidate's noise
    alone, the plans measured, the latency decision of each kept rewrite, why each conv the
    plan leaves dense stays so."""

    plan: Plan | None
    sens: dict[tuple[str, LayerPlan], float]
    tried: list[dict[str, Any]]
    decisions: dict[str, Decision]
    why: dict[str, str]


def _why_dense(run: Run, plan: Plan, cands: dict, decisions: dict) -> dict[str, str]:
    why = {}
    for layer in run.layers:
        slow = [f"{p.form(layer.shape[1])} {p.groups}x{p.rank} {d.speedup:.2f}x"
                for (n, p), d in decisions.items() if n == layer.name and not d.keep]
        if layer.name in plan:
            continue
        why[layer.name] = ("no rank of the allowed forms saves 10% of its MACs"
                           if not cands[layer.name] else
                           f"slower on the target ({'; '.join(slow)}; "
                           f"{next(iter(decisions.values())).how})" if slow else
                           "the accuracy budget: the plan spends it on other convs")
    return why


def search(run: Run, opts: CompressOptions, curve: int) -> Found:
    """Sensitivity, then the choice; with the latency check, a layer whose chosen form the
    target runs slower than its dense conv loses that form and the choice is made again
    (LATENCY_ROUNDS at most; what is still slower then stays dense)."""
    lanes = _lanes(opts.target)
    cands = {layer.name: candidates(layer, FORMS[opts.form], lanes) for layer in run.layers}
    sens = sensitivity(run.base, run.layers, cands, run.cache,
                       lambda m: run.quick.score(m).noise)
    run.done("sensitivity")
    banned: set[tuple[str, str]] = set()
    decisions: dict[tuple[str, LayerPlan], Decision] = {}
    shape = {layer.name: layer.shape for layer in run.layers}
    for _ in range(LATENCY_ROUNDS):
        plan, tried = _choose(run, sens, opts, banned, curve)
        if not plan or not opts.latency:
            break
        _decide(run, plan, opts, decisions)
        slow = {(n, p.form(shape[n][1])) for n, p in plan.items() if not decisions[(n, p)].keep}
        if not slow:
            break
        banned |= slow
    else:
        plan = {n: p for n, p in plan.items() if decisions[(n, p)].keep}
    run.done("search")
    kept = {n: decisions[(n, p)] for n, p in (plan or {}).items() if (n, p) in decisions}
    return Found(plan, sens, tried, kept, _why_dense(run, plan or {}, cands, decisions))


def final(run: Run, found: Found, opts: CompressOptions, warnings: list[str]
           ) -> tuple[Plan, onnx.ModelProto, Score]:
    """The plan kept, the model built from it and its score; a plan over budget (none found,
    or the latency check took layers back and the rest lose more) leaves the model dense, the
    reason in `warnings` and in each conv's `found.why`."""
    reason = ""
    if found.plan is None:
        reason = (f"no rank plan keeps the accuracy drop within {opts.max_accuracy_drop} "
                  f"points on {len(run.scorer.feeds)} held-out samples"
                  + (f" at {opts.flops:.0%} of the conv MACs" if opts.flops else ""))
    else:
        final = build(run.base, found.plan, run.cache) if found.plan else run.base
        score = run.scorer.score(final)
        if score.drop <= opts.max_accuracy_drop:
            return found.plan, final, score
        reason = f"the rewrites the target runs faster lose {score.drop:.2f} points, over budget"
    warnings.append(f"{reason}; the model is left dense")
    found.why.update({layer.name: reason for layer in run.layers})
    return {}, run.base, run.scorer.original


def _lanes(target: str) -> int:
    """fp32 lanes of the target's SIMD registers (targets/cpu/models.toml)."""
    from edgec import targets

    return targets.cpu_model(targets.get(target).tvm_target()).vector_bits // 32


def _decide(run: Run, plan: Plan, opts: CompressOptions,
            decisions: dict[tuple[str, LayerPlan], Decision]) -> None:
    """Add the latency decision of each of the plan's rewrites not decided yet (speed.py)."""
    from edgec import targets

    here = targets.get(opts.target).runs_here()
    index = GraphIndex(run.base.graph)
    for node in run.base.graph.node:
        p = plan.get(node.name)
        if p is not None and (node.name, p) not in decisions:
            w = index.const(node.input[1])
            decisions[(node.name, p)] = (
                measured(node, w, run.shapes[node.input[0]], p, opts.target) if here
                else modelled(w.shape, p))
