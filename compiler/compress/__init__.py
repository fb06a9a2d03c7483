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
from ..passes.graph import GraphIndex, name_nodes
from .activations import fit_reason
from .budget import Run, final, search
from .fit import MomentCache, Plan, convs
from .options import FORMS, CompressOptions
from .report import layer_rows
from .samples import split
from .score import Score, Scorer
from .search import Layer, plan_macs

PHASES = ("load", "data", "sensitivity", "search", "write")
SENSITIVITY_SAMPLES = 64  # held-out samples each candidate's noise is measured on


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


def _write(model: onnx.ModelProto, plan: Plan, output: str | Path) -> Path:
    import json

    from ..optimize import exportable

    onnx.helper.set_model_props(model, {
        **{p.key: p.value for p in model.metadata_props},
        "edgec.compress": json.dumps({n: [p.groups, p.rank] for n, p in plan.items()})})
    exportable(model, "compressed model", "a bug")
    return atomic_write_bytes(Path(output), model.SerializeToString())


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
    base = name_nodes(passes.run_passes(model, passes.select())[0])
    layers, shapes, declined = _layers(base)
    load_s, t1 = time.perf_counter() - t0, time.perf_counter()
    calib, held, labels = split(base, opts.data, opts.preprocess, opts.calibration,
                                opts.held_out, opts.seed)
    outs = tensor_specs(list(base.graph.output), set())
    run = Run(base, layers, shapes, Scorer(base, held, labels, outs),
               Scorer(base, held[:SENSITIVITY_SAMPLES], None, outs), MomentCache(base, calib),
               seconds={"load": round(load_s, 2)}, t=t1)
    run.done("data")
    warnings = list(front.warnings) + [f"declined {d}" for d in declined]
    found = search(run, opts, curve)
    plan, final_model, score = final(run, found, opts, warnings)
    path = _write(final_model, plan, output) if output else None
    run.done("write")
    how = next(iter(found.decisions.values())).how if found.decisions and plan else ""
    rows = layer_rows(layers, plan, found.sens, found.decisions, found.why)
    return CompressResult(path, rows, run.scorer.original, score,
                          sum(la.macs for la in layers), plan_macs(layers, plan), found.tried,
                          run.seconds, {"calibration": len(calib), "held_out": len(held)},
                          warnings, how)
