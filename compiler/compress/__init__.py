"""`edgec compress`: standard convs as low-rank separable or grouped pairs, under an accuracy
budget, fitted on the user's data without retraining.

Phases (`PHASES`):
  load         frontend + the exact passes (BatchNorm folded into the convs it follows)
  data         samples of --data: every other one (shuffled, seeded) calibrates the fits, the
               rest are held out to judge them (samples.py, score.py)
  sensitivity  every candidate rank of every conv alone, data-aware, its noise on held-out
               samples (search.py)
  search       Lagrangian plans from cheapest to exact, bisected by the sequentially fitted
               model's accuracy drop (fit.py, search.py); a rewrite stays only where its
               kernels beat the dense conv's on the target (speed.py), else its form is
               dropped for that layer and the search runs again
  write        the final model, checked by the ONNX checker, written atomically
A budget no plan meets leaves the model dense, with the reason, and is no error.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from edgec.errors import EdgecError
from edgec.fileio import atomic_write_bytes

from .. import frontend, passes
from ..passes.graph import GraphIndex
from .activations import fit_reason
from .fit import LayerPlan, MomentCache, Plan, build, convs
from .report import layer_rows
from .samples import split
from .score import Score, Scorer
from .search import Layer, candidates, choose, lagrangian_plans, plan_macs, sensitivity
from .speed import Decision, measured, modelled

PHASES = ("load", "data", "sensitivity", "search", "write")
LATENCY_ROUNDS = 3
SENSITIVITY_SAMPLES = 64  # held-out samples each candidate's noise is measured on
FORMS = {"separable": ["separable"], "grouped": ["grouped"], "auto": ["grouped", "separable"]}


@dataclass(frozen=True)
class CompressOptions:
    data: str | Path
    max_accuracy_drop: float = 1.0  # top-1 points (or % of samples changed without labels)
    form: str = "auto"  # separable | grouped | auto
    flops: float | None = None  # conv MACs to reach, as a share of the original's
    target: str = "host"  # vector width of the ranks; where the latency check runs
    latency: bool = True  # keep only rewrites the target runs faster
    preprocess: dict[str, Any] = field(default_factory=dict)
    input_shapes: dict[str, list[int]] | None = None
    calibration: int = 256  # samples the fits see, at most
    held_out: int = 2048  # samples that judge them, at most
    seed: int = 0


@dataclass
class CompressResult:
    output: Path | None
    layers: list[dict[str, Any]]  # per conv: form, rank, MACs, noise alone, latency decision
    original: Score
    compressed: Score
    macs_before: int  # the convs' MACs
    macs_after: int
    plans: list[dict[str, Any]]  # the plans the search measured: MACs and drop
    seconds: dict[str, float]
    samples: dict[str, int]
    warnings: list[str] = field(default_factory=list)
    decided_by: str = ""

    def to_json(self) -> dict[str, Any]:
        return {"output": str(self.output) if self.output else None, "layers": self.layers,
                "original": self.original.to_json(), "compressed": self.compressed.to_json(),
                "conv_macs_before": self.macs_before, "conv_macs_after": self.macs_after,
                "plans": self.plans, "seconds": self.seconds, "samples": self.samples,
                "warnings": self.warnings, "latency_decided_by": self.decided_by}


def _named(model: onnx.ModelProto) -> onnx.ModelProto:
    """Every node named (the plan refers to convs by name)."""
    taken = {n.name for n in model.graph.node if n.name}
    for i, node in enumerate(model.graph.node):
        if not node.name:
            name = f"{node.op_type}_{i}"
            while name in taken:
                name += "_"
            node.name = name
            taken.add(name)
    return model


def _layers(model: onnx.ModelProto) -> tuple[list[Layer], dict[str, list[int]], list[str]]:
    """The convs compress may rewrite, every tensor's shape, and the convs it declines (why)."""
    shapes = {vi.name: [d.dim_value for d in vi.type.tensor_type.shape.dim]
              for vi in [*model.graph.value_info, *model.graph.input, *model.graph.output]}
    index, layers, declined = GraphIndex(model.graph), [], []
    for node in convs(model):
        w = index.const(node.input[1])
        out = shapes.get(node.output[0])
        why = fit_reason(node) or (None if out and all(out) else "output shape unknown")
        if why:
            declined.append(f"{node.name}: {why}")
            continue
        layers.append(Layer(node.name, tuple(w.shape), int(np.prod(out)) // out[1]))
    return layers, shapes, declined


def _lanes(target: str) -> int:
    """fp32 lanes of the target's SIMD registers (targets/cpu/models.toml)."""
    from edgec import targets

    return targets.cpu_model(targets.get(target).tvm_target()).vector_bits // 32


def _decide(run: _Run, plan: Plan, opts: CompressOptions,
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


def _write(model: onnx.ModelProto, plan: Plan, output: str | Path) -> Path:
    import json

    from ..optimize import MAX_IR

    model.ir_version = min(model.ir_version, MAX_IR)
    onnx.helper.set_model_props(model, {
        **{p.key: p.value for p in model.metadata_props},
        "edgec.compress": json.dumps({n: [p.groups, p.rank] for n, p in plan.items()})})
    try:
        onnx.checker.check_model(model)
    except onnx.checker.ValidationError as err:
        raise EdgecError(f"compressed model fails the ONNX checker (a bug): "
                         f"{str(err).splitlines()[0]}") from None
    return atomic_write_bytes(Path(output), model.SerializeToString())


@dataclass
class _Run:
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


def _choose(run: _Run, sens: dict, opts: CompressOptions, banned: set[tuple[str, str]],
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
                       "sqnr_db": _db(score.noise), "chosen": plans[i] is plan})
    return plan, points


def _db(noise: float) -> float | None:
    """SQNR in dB of a noise share (None where exact)."""
    return None if noise <= 0 else float(-10 * np.log10(noise))


@dataclass
class _Found:
    """What the search found: the plan (None: no plan within budget), each candidate's noise
    alone, the plans measured, the latency decision of each kept rewrite, why each conv the
    plan leaves dense stays so."""

    plan: Plan | None
    sens: dict[tuple[str, LayerPlan], float]
    tried: list[dict[str, Any]]
    decisions: dict[str, Decision]
    why: dict[str, str]


def _why_dense(run: _Run, plan: Plan, cands: dict, decisions: dict) -> dict[str, str]:
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


def _search(run: _Run, opts: CompressOptions, curve: int) -> _Found:
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
    return _Found(plan, sens, tried, kept, _why_dense(run, plan or {}, cands, decisions))


def _final(run: _Run, found: _Found, opts: CompressOptions, warnings: list[str]
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


def compress(model_path: str | Path, *, output: str | Path | None,
             options: CompressOptions, curve: int = 0) -> CompressResult:
    """Compress `model_path` under `options`; write it to `output` (None: only report).
    `curve` more plans are measured, evenly over the search's list, for the trade-off curve."""
    opts = options
    if opts.form not in FORMS:
        raise EdgecError(f"--form {opts.form!r}: want one of {', '.join(FORMS)}")
    if opts.flops is not None and not 0 < opts.flops < 1:
        raise EdgecError(f"--flops {opts.flops}: want a share of the MACs in (0, 1)")
    from edgec.compiler import tensor_specs

    t0 = time.perf_counter()
    model, front = frontend.load(model_path, input_shapes=opts.input_shapes, check_ops=False)
    base = _named(passes.run_passes(model, passes.select())[0])
    layers, shapes, declined = _layers(base)
    load_s, t1 = time.perf_counter() - t0, time.perf_counter()
    calib, held, labels = split(base, opts.data, opts.preprocess, opts.calibration,
                                opts.held_out, opts.seed)
    outs = tensor_specs(list(base.graph.output), set())
    run = _Run(base, layers, shapes, Scorer(base, held, labels, outs),
               Scorer(base, held[:SENSITIVITY_SAMPLES], None, outs), MomentCache(base, calib),
               seconds={"load": round(load_s, 2)}, t=t1)
    run.done("data")
    warnings = list(front.warnings) + [f"declined {d}" for d in declined]
    found = _search(run, opts, curve)
    plan, final, score = _final(run, found, opts, warnings)
    path = _write(final, plan, output) if output else None
    run.done("write")
    how = next(iter(found.decisions.values())).how if found.decisions and plan else ""
    rows = layer_rows(layers, plan, found.sens, found.decisions, found.why)
    return CompressResult(path, rows, run.scorer.original, score,
                          sum(la.macs for la in layers), plan_macs(layers, plan), found.tried,
                          run.seconds, {"calibration": len(calib), "held_out": len(held)},
                          warnings, how)
