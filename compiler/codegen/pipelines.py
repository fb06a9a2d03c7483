"""Relax pipelines, by name; a target file picks one with `pipeline = "NAME"`.

`cpu` (the default for llvm targets): before import, convs get channel counts the vector length
divides (onnx_level/pad_channels.py); then channels-last layout (relax_level/layout.py, its weight
transposes folded by numpy: relax_level/fold_numpy.py), 3x3 convs as Winograd transforms and GEMMs
(relax_level/winograd.py), TVM's legalization and fusion (conv + bias + activation + residual add
become one kernel), each conv merged with the depthwise conv that reads its output
(relax_level/merge_chains.py) and each transpose or reshape kernel merged into the conv that reads
it (relax_level/merge_moves.py), then each kernel gets the schedule recorded for it in the tuning
database when there is one, else edgec's schedule rules (cpu/schedules.py), then lowering to the VM.

`tvm-default` is TVM's own default pipeline: NCHW, fused, and no schedules at all (serial,
scalar loops). It stays as the baseline the benchmarks compare against.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import onnx


@dataclass
class Lowering:
    """What a pipeline did to each kernel: rule name, "tuned", or "unscheduled"."""

    kernels: dict[str, str] = field(default_factory=dict)
    database: Any = None  # a MetaSchedule database whose records take precedence
    # record key (codegen.tuned.record_key) -> "rule" or "tuned", as timed in the model
    # (compiler/in_model.py): a "rule" record is not applied
    verdicts: dict[str, str] = field(default_factory=dict)
    records: dict[str, str] = field(default_factory=dict)  # kernel -> key of the record applied
    kept: list[str] = field(default_factory=list)  # kernels with a record a verdict turned down
    graph: list[str] = field(default_factory=list)  # what the pipeline's ONNX step changed
    # bytes each input's data must be aligned to, in input order (tir_level/unaligned_inputs.py);
    # empty: TVM's 64 for every input
    input_alignment: list[int] = field(default_factory=list)


@dataclass(frozen=True)
class Pipeline:
    relax: Callable[[Any, Lowering], Any]  # TVM target, lowering -> Relax module transform
    # ONNX rewrite before import, for this TVM target (layout-level choices, exact numerics)
    graph: Callable[[onnx.ModelProto, Any], tuple[onnx.ModelProto, Any]] | None = None


def _tvm_default(tvm_target: Any, lowering: Lowering) -> Any:
    from tvm import relax

    return relax.get_default_pipeline(tvm_target)


def fused(tvm_target: Any, lowering: Lowering | None = None) -> Any:
    """The `cpu` pipeline up to its kernels: channels-last, legalized, fused, unscheduled.

    Tuning extracts its tasks here, so the kernels it tunes are exactly the ones compile
    looks up in the database. Graph rewrites (Winograd) are noted in `lowering.graph`.
    """
    import tvm
    from tvm import relax
    from tvm.relax.backend.cpu_generic import pipeline as stock

    from edgec.compiler.codegen.cpu.schedules import cpu_shape, schedule
    from edgec.compiler.codegen.relax_level.fold_numpy import fold_numpy
    from edgec.compiler.codegen.relax_level.layout import channels_last
    from edgec.compiler.codegen.relax_level.merge_chains import merge_conv_depthwise
    from edgec.compiler.codegen.relax_level.merge_moves import merge_moves
    from edgec.compiler.codegen.relax_level.winograd import winograd

    @tvm.transform.module_pass(opt_level=0, name="EdgecChannelsLast")
    def layout(mod: Any, _ctx: Any) -> Any:
        # the weight transposes it adds are folded by numpy, not by one LLVM build each
        mod, report = winograd(fold_numpy(channels_last(mod))[0])
        if lowering is not None and report.changed and report.summary() not in lowering.graph:
            lowering.graph.append(report.summary())
        return mod

    cpu = cpu_shape(tvm_target)

    def scheduled(func: Any) -> bool:
        found = schedule(func, cpu)
        return found is not None and found[0] == "conv_depthwise"

    def reduced(func: Any) -> bool:  # a reduction rule took the kernel, prologue and all
        found = schedule(func, cpu)
        return found is not None and found[0] != "elementwise"

    @tvm.transform.module_pass(opt_level=0, name="EdgecMergeKernels")
    def merge(mod: Any, _ctx: Any) -> Any:
        return merge_moves(merge_conv_depthwise(mod, accept=scheduled), accept=reduced)

    # Marks which kernel parameters are constants: the schedules may repack those.
    free = relax.transform.AttachAttrLayoutFreeBuffers()
    return tvm.transform.Sequential(stock.library_dispatch_passes(tvm_target) + [layout]
                                    + stock.legalize_passes(tvm_target) + [merge, free])


def _cpu(tvm_target: Any, lowering: Lowering) -> Any:
    import tvm
    from tvm import relax
    from tvm.relax.backend.cpu_generic import pipeline as stock

    from edgec.compiler.codegen.cpu.schedules import schedule_pass
    from edgec.compiler.codegen.tir_level.unaligned_inputs import unaligned_inputs

    @tvm.transform.module_pass(opt_level=0, name="EdgecUnalignedInputs")
    def inputs(mod: Any, _ctx: Any) -> Any:
        mod, report, lowering.input_alignment = unaligned_inputs(mod)
        if report.declined and report.summary() not in lowering.graph:
            lowering.graph.append(report.summary())
        return mod

    tuned = []
    if lowering.database is not None:
        from edgec.compiler.codegen.tuned import apply_database

        tuned = [apply_database(tvm_target, lowering)]
    # Weight repacking blocks the schedules add become separate kernels on constants, which
    # FoldConstant runs once here instead of at every inference.
    prepack = [relax.transform.SplitLayoutRewritePreproc(), relax.transform.FoldConstant()]
    return tvm.transform.Sequential(
        [fused(tvm_target, lowering)] + tuned + [schedule_pass(tvm_target, lowering.kernels)]
        + prepack + stock.dataflow_lower_passes(tvm_target) + stock.finalize_passes(tvm_target)
        + [inputs]
    )


def _cpu_graph(model: onnx.ModelProto, tvm_target: Any) -> tuple[onnx.ModelProto, Any]:
    from edgec.compiler.codegen.cpu.schedules import cpu_shape
    from edgec.compiler.codegen.onnx_level.pad_channels import pad_channels

    return pad_channels(model, multiple=cpu_shape(tvm_target).lanes)


PIPELINES: dict[str, Pipeline] = {
    "cpu": Pipeline(relax=_cpu, graph=_cpu_graph),
    "tvm-default": Pipeline(relax=_tvm_default),
}
