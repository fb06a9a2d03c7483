"""`edgec optimize`: ONNX in, optimized ONNX out, checked against the input on seeded inputs.

The written model runs in onnxruntime and opens in Netron. It is written only when, on every
check input, each output agrees with the input model's within tolerance.py's bound (both run in
onnxruntime with ORT_DISABLE_ALL, so ORT's fusions cannot hide a bad rewrite).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import onnx

from edgec.errors import EdgecError
from edgec.fileio import atomic_write_bytes
from edgec.harness.ort import ort_session

from . import analysis, frontend, passes, validate
from .tolerance import describe

MAX_IR = 10  # onnxruntime reads IR <= 13; 10 keeps older runtimes and Netron happy


@dataclass
class OptimizeResult:
    output: Path
    reports: list[passes.PassReport]
    before: analysis.ModelCost
    after: analysis.ModelCost
    check: dict[str, Any] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)


def exportable(model: onnx.ModelProto, what: str, culprit: str) -> None:
    """Cap the IR version at MAX_IR and pass the ONNX checker, else an EdgecError naming
    `what` and the `culprit` (the written file runs in onnxruntime and opens in Netron)."""
    model.ir_version = min(model.ir_version, MAX_IR)
    try:
        onnx.checker.check_model(model)
    except onnx.checker.ValidationError as err:
        raise EdgecError(f"{what} fails the ONNX checker ({culprit}): "
                         f"{str(err).splitlines()[0]}") from None


def check_equivalent(original: onnx.ModelProto, optimized: onnx.ModelProto, checks: int,
                     seed: int = 0) -> dict[str, Any]:
    """Run both models in onnxruntime on `checks` seeded inputs; worst agreement per output."""
    from edgec.runtime import random_inputs

    weights = {t.name for t in optimized.graph.initializer}
    specs = [{"name": vi.name,
              "shape": [d.dim_value for d in vi.type.tensor_type.shape.dim],
              "dtype": onnx.helper.tensor_dtype_to_np_dtype(vi.type.tensor_type.elem_type)}
             for vi in optimized.graph.input if vi.name not in weights]
    feeds = [random_inputs(specs, seed + i) for i in range(checks)]
    sess = ort_session(optimized.SerializeToString(), threads=1, optimize=False)
    names = [o.name for o in sess.get_outputs()]
    run = lambda feed: dict(zip(names, sess.run(None, feed)))  # noqa: E731
    return validate.agreement(run, original.SerializeToString(), feeds, threads=1)


def optimize(model_path: str | Path, *, output: str | Path,
             input_shapes: dict[str, list[int]] | None = None,
             only: list[str] | None = None, skip: list[str] | None = None,
             checks: int = 3, seed: int = 0) -> OptimizeResult:
    names = passes.select(only, skip or ())
    model, front = frontend.load(model_path, input_shapes=input_shapes, check_ops=False)
    before = analysis.analyze(model)
    optimized, reports = passes.run_passes(model, names)
    exportable(optimized, "optimized model", "a pass bug")
    check: dict[str, Any] = {}
    if checks > 0:
        check = check_equivalent(model, optimized, checks, seed)
        if not check["ok"]:
            bad = next(r for r in check["outputs"] if not r["ok"])
            raise EdgecError(f"optimized model disagrees with the input on output "
                             f"'{bad['name']}' ({describe(bad)}); nothing written")
    path = atomic_write_bytes(Path(output), optimized.SerializeToString())
    return OptimizeResult(path, reports, before, analysis.analyze(optimized), check,
                          front.warnings)
