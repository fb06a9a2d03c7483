"""Codegen: optimized ONNX -> Relax -> target pipeline -> built library on disk.

Never changes what the graph computes; every choice that depends on the target (triple, CPU,
features, compiler, pipeline) is read from the target's description.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import onnx

from edgec.compiler.codegen.pipelines import PIPELINES, Lowering
from edgec.errors import EdgecError
from edgec.targets import Target

__all__ = ["PIPELINES", "Lowering", "build", "export", "import_model", "kernel_flops", "lower",
           "to_relax"]


def to_relax(model: onnx.ModelProto, input_shapes: dict[str, list[int]]) -> Any:
    """The Relax module TVM's ONNX importer makes of `model`."""
    from tvm.relax.frontend.onnx import from_onnx

    try:
        return from_onnx(model, shape_dict=input_shapes, keep_params_in_input=False)
    except Exception as err:
        line = next((ln for ln in str(err).splitlines() if ln.strip()), type(err).__name__)
        raise EdgecError(f"TVM could not import the model: {line[:300]}") from None


def _pipeline(target: Target) -> Any:
    pipeline = PIPELINES.get(target.pipeline)
    if pipeline is None:
        raise EdgecError(f"target '{target.name}' names unknown pipeline '{target.pipeline}' "
                         f"(known: {', '.join(PIPELINES)})")
    return pipeline


def import_model(model: onnx.ModelProto, target: Target, input_shapes: dict[str, list[int]],
                 lowering: Lowering | None = None) -> Any:
    """The Relax module of `model` after the ONNX steps (explicit_pads, then the target
    pipeline's; call within the TVM target's scope); what they changed or declined is added to
    `lowering.graph`."""
    from edgec.compiler.codegen.onnx_level.explicit_pads import explicit_pads

    pipeline = _pipeline(target)
    # every pipeline: the importer's own padding is not trusted, so a decline is worth a line
    model, report = explicit_pads(model)
    if lowering is not None and (report.changed or report.declined):
        lowering.graph.append(report.summary())
    if pipeline.graph is not None:
        model, reports = pipeline.graph(model, target.tvm_target())
        if lowering is not None:
            lowering.graph += [r.summary() for r in reports if r.changed]
    return to_relax(model, input_shapes)


def lower(model: onnx.ModelProto, target: Target, input_shapes: dict[str, list[int]],
          lowering: Lowering | None = None) -> Any:
    """The Relax module after the target's pipeline: fused kernels as TIR PrimFuncs.

    `lowering` (optional) carries a tuning database in and the per-kernel schedule record out.
    """
    pipeline = _pipeline(target)
    tvm_target = target.tvm_target()
    lowering = lowering if lowering is not None else Lowering()
    with tvm_target:
        return pipeline.relax(tvm_target, lowering)(
            import_model(model, target, input_shapes, lowering))


def kernel_flops(lowered: Any) -> dict[str, float]:
    """FLOPs of each kernel (PrimFunc) of a lowered module, as TVM's analysis estimates them."""
    import tvm
    from tvm.s_tir.analysis import estimate_tir_flops

    return {gv.name_hint: float(estimate_tir_flops(tvm.IRModule({"main": f})))
            for gv, f in lowered.functions.items()
            if isinstance(f, tvm.tirx.PrimFunc)}


def build(model: onnx.ModelProto, target: Target, input_shapes: dict[str, list[int]],
          lowering: Lowering | None = None) -> Any:
    """Build a Relax VM executable for `target`; nothing is written to disk."""
    import tvm

    from edgec.compiler.codegen.tir_level.stack_scratch import pipeline

    chosen = _pipeline(target)
    lowering = lowering if lowering is not None else Lowering()
    if lowering.precision not in chosen.precisions:
        raise EdgecError(f"target '{target.name}' (pipeline '{target.pipeline}') builds "
                         f"{', '.join(chosen.precisions)}, not {lowering.precision}")
    lowered = lower(model, target, input_shapes, lowering)
    if chosen.check_lowered is not None:
        chosen.check_lowered(lowered)
    if chosen.prepare is not None:
        chosen.prepare()
    tvm_target = target.tvm_target()
    with tvm_target:  # the CUDA compile callback reads the architecture from it
        return tvm.compile(lowered, tvm_target, relax_pipeline=None, tir_pipeline=pipeline())


def export(executable: Any, path: Path, target: Target, cc: str | None = None) -> Path:
    """Link the executable into a shared library with the target's C++ compiler."""
    from tvm.support import cc as tvm_cc

    compiler = target.compiler(cc)
    fcompile = tvm_cc.cross_compiler(compiler)
    try:
        executable.export_library(str(path), fcompile=fcompile)
    except Exception as err:
        line = next((ln for ln in str(err).splitlines() if ln.strip()), type(err).__name__)
        raise EdgecError(f"linking with {compiler} failed: {line[:300]}") from None
    chosen = _pipeline(target)
    if chosen.check_library is not None:
        chosen.check_library(path, target.tvm_target())
    return path
