"""Relax pipelines, by name; a target file picks one with `pipeline = "NAME"`.

`cpu` (the default for llvm targets). Its ONNX steps, before import (onnx_level/): Pow by
2, 3 or 4 becomes multiplies (integer_pow), strided ConvTransposes a stride-1 conv and a
pixel shuffle (shuffle_transpose), 3-D convs 2-D ones over depth-folded batch (fold_depth),
grouped convs get groups the vectors fill (group_channels), convs channel counts the vector
length divides (pad_channels); at import, auto_pad is written out (explicit_pads). Then its
named phases, in order:

    dispatch   TVM's library dispatch
    int8       QDQ convs as int8 convs with int32 sums (relax_level/int8), the other QDQ ops
               elementwise (qdq_elementwise)
    layout     channels-last (relax_level/layout, unstack, int8_pads), weight transposes folded
               by numpy (fold_numpy), 3x3 convs as Winograd transforms and GEMMs (winograd)
    legalize   TVM's legalization to TIR kernels and fusion (conv + bias + activation +
               residual add become one kernel)
    merge      each conv merged with the depthwise conv that reads it (merge_chains), each
               transpose or reshape kernel into the conv that reads it (merge_moves)
    constants  the kernel parameters that are constants marked (the schedules repack them)
    tuned      the tuning database's records, where the in-model verdict keeps them
    schedule   edgec's schedule rules (cpu/schedules.py) for every other kernel
    prepack    the weight repacking the schedules add, run once at compile time
    lower      TVM's lowering to the VM
    inputs     kernels reading the model's inputs take them unaligned (tir_level/)

The TIR build after them keeps register-tile scratch on the stack (tir_level/stack_scratch).
Tuning extracts its tasks after `constants` (fused_phases).

`gpu` (CUDA targets): dispatch, precision (fp16 with --precision fp16), legalize, schedule
(dlight's GPU rules as the floor), lower; see gpu/pipeline.py. Its build compiles the kernels
with nvcc into the library and refuses kernels left on the host (gpu/checks.py).

`opencl` (OpenCL targets: PoCL, Mali, Adreno): the same phases on TVM's generic GPU backend,
dlight's Adreno rules tried before its GPU rules; the library holds the kernels' OpenCL C,
checked to define every kernel (gpu/checks.py), and no kernel may stay on the host.

`tvm-default` is TVM's own default pipeline: NCHW, fused, and no schedules at all (serial,
scalar loops). It stays as the baseline the benchmarks compare against.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import onnx

from edgec.compiler.codegen.gpu import checks as _gpu_checks
from edgec.compiler.codegen.gpu import pipeline as _gpu


@dataclass
class Lowering:
    """What a pipeline did to each kernel: rule name, "tuned", or "unscheduled"."""

    kernels: dict[str, str] = field(default_factory=dict)
    database: Any = None  # a MetaSchedule database whose records take precedence
    # record key (codegen.tuned.record_key) -> "rule" or "tuned", as timed in the model
    # (compiler/tuning/in_model.py): a "rule" record is not applied
    verdicts: dict[str, str] = field(default_factory=dict)
    records: dict[str, str] = field(default_factory=dict)  # kernel -> key of the record applied
    kept: list[str] = field(default_factory=list)  # kernels with a record a verdict turned down
    graph: list[str] = field(default_factory=list)  # what the pipeline's ONNX step changed
    # bytes each input's data must be aligned to, in input order (tir_level/unaligned_inputs.py);
    # empty: TVM's 64 for every input
    input_alignment: list[int] = field(default_factory=list)
    precision: str = "fp32"  # in: the arithmetic the kernels use (Pipeline.precisions)


Phases = list[tuple[str, list[Any]]]  # (phase name, its TVM module passes), in order


@dataclass(frozen=True)
class Pipeline:
    # TVM target, lowering -> the named phases of the Relax module's transformation
    phases: Callable[[Any, Lowering], Phases]
    # ONNX rewrites before import, for this TVM target (layout-level choices, exact numerics):
    # the model and each rewrite's PassReport
    graph: Callable[[onnx.ModelProto, Any], tuple[onnx.ModelProto, list[Any]]] | None = None
    precisions: tuple[str, ...] = ("fp32",)  # what --precision may ask of it
    prepare: Callable[[], None] | None = None  # before the TIR build (e.g. the CUDA compiler)
    check_lowered: Callable[[Any], None] | None = None  # the lowered module, before the build
    # the exported library and the TVM target -> what it holds; an EdgecError where it is wrong
    check_library: Callable[[Any, Any], Any] | None = None

    def relax(self, tvm_target: Any, lowering: Lowering) -> Any:
        """All phases as one TVM module transform."""
        return sequential(self.phases(tvm_target, lowering))


def sequential(phases: Phases) -> Any:
    import tvm

    return tvm.transform.Sequential([t for _, passes in phases for t in passes])


def _tvm_default(tvm_target: Any, lowering: Lowering) -> Phases:
    from tvm import relax

    return [("tvm-default", [relax.get_default_pipeline(tvm_target)])]


def _merge_pass(tvm_target: Any) -> Any:
    """Kernel merges: conv -> depthwise chains a schedule takes, moves into their readers."""
    import tvm

    from edgec.compiler.codegen.cpu.int8 import int8_reduction
    from edgec.compiler.codegen.cpu.schedules import cpu_shape, schedule
    from edgec.compiler.codegen.relax_level.merge_chains import merge_conv_depthwise
    from edgec.compiler.codegen.relax_level.merge_moves import merge_moves

    cpu = cpu_shape(tvm_target)

    def scheduled(func: Any) -> bool:  # int8 convs stay apart: their rule is the dot product
        found = schedule(func, cpu)
        return found is not None and found[0] == "conv_depthwise" and not int8_reduction(func)

    def reduced(func: Any) -> bool:  # a reduction rule took the kernel, prologue and all
        found = schedule(func, cpu)
        return found is not None and found[0] != "elementwise"

    @tvm.transform.module_pass(opt_level=0, name="EdgecMergeKernels")
    def merge(mod: Any, _ctx: Any) -> Any:
        return merge_moves(merge_conv_depthwise(mod, accept=scheduled), accept=reduced)

    return merge


def fused_phases(tvm_target: Any, lowering: Lowering | None = None) -> Phases:
    """The `cpu` pipeline up to its kernels: channels-last, legalized, fused, unscheduled.

    Tuning extracts its tasks here, so the kernels it tunes are exactly the ones compile
    looks up in the database. Graph rewrites (Winograd) are noted in `lowering.graph`.
    """
    import tvm
    from tvm import relax
    from tvm.relax.backend.cpu_generic import pipeline as stock

    from edgec.compiler.codegen.cpu.schedules import cpu_shape
    from edgec.compiler.codegen.relax_level.fold_numpy import fold_numpy
    from edgec.compiler.codegen.relax_level.int8 import Int8Options, int8
    from edgec.compiler.codegen.relax_level.int8_pads import pads_channels_last
    from edgec.compiler.codegen.relax_level.layout import channels_last
    from edgec.compiler.codegen.relax_level.qdq_elementwise import qdq_elementwise
    from edgec.compiler.codegen.relax_level.winograd import winograd

    def note(report: Any) -> None:
        if lowering is not None and report.changed and report.summary() not in lowering.graph:
            lowering.graph.append(report.summary())

    @tvm.transform.module_pass(opt_level=0, name="EdgecInt8")
    def quantized(mod: Any, _ctx: Any) -> Any:
        mod, report = int8(mod, Int8Options(activation=cpu_shape(tvm_target).int8_activation))
        note(report)
        mod, report = qdq_elementwise(mod)
        note(report)
        return mod

    @tvm.transform.module_pass(opt_level=0, name="EdgecChannelsLast")
    def layout(mod: Any, _ctx: Any) -> Any:
        # the weight transposes it adds are folded by numpy, not by one LLVM build each
        mod = pads_channels_last(channels_last(mod))[0]
        mod, report = winograd(fold_numpy(mod)[0])
        note(report)
        return mod

    return [
        ("dispatch", stock.library_dispatch_passes(tvm_target)),
        ("int8", [quantized]),  # QDQ convs in integer arithmetic, other QDQ elementwise
        ("layout", [layout]),  # channels-last, weights folded, 3x3 convs as Winograd
        ("legalize", stock.legalize_passes(tvm_target)),  # TIR kernels, fused by TVM
        ("merge", [_merge_pass(tvm_target)]),
        # marks which kernel parameters are constants: the schedules may repack those
        ("constants", [relax.transform.AttachAttrLayoutFreeBuffers()]),
    ]


def fused(tvm_target: Any, lowering: Lowering | None = None) -> Any:
    """fused_phases as one TVM module transform."""
    return sequential(fused_phases(tvm_target, lowering))


def _cpu(tvm_target: Any, lowering: Lowering) -> Phases:
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
    return fused_phases(tvm_target, lowering) + [
        ("tuned", tuned),  # records of the tuning database, where a verdict keeps them
        ("schedule", [schedule_pass(tvm_target, lowering.kernels)]),  # edgec's rules
        # weight repacking the schedules add becomes kernels on constants: run once, here
        ("prepack", [relax.transform.SplitLayoutRewritePreproc(),
                     relax.transform.FoldConstant()]),
        ("lower", stock.dataflow_lower_passes(tvm_target) + stock.finalize_passes(tvm_target)),
        ("inputs", [inputs]),  # input kernels take unaligned data (no copy per call)
    ]


def _cpu_graph(model: onnx.ModelProto, tvm_target: Any) -> tuple[onnx.ModelProto, list[Any]]:
    from edgec.compiler.codegen.cpu.schedules import cpu_shape
    from edgec.compiler.codegen.onnx_level.fold_depth import fold_depth
    from edgec.compiler.codegen.onnx_level.group_channels import group_channels
    from edgec.compiler.codegen.onnx_level.integer_pow import integer_pow
    from edgec.compiler.codegen.onnx_level.lift_1d import lift_1d
    from edgec.compiler.codegen.onnx_level.pad_channels import pad_channels
    from edgec.compiler.codegen.onnx_level.shuffle_transpose import shuffle_transpose

    lanes = cpu_shape(tvm_target).lanes
    model, powers = integer_pow(model)
    model, lifted = lift_1d(model)  # first: its 2-D ConvTransposes go on to shuffle_transpose
    model, shuffled = shuffle_transpose(model)
    model, folded = fold_depth(model)
    model, grouped = group_channels(model, lanes=lanes)
    model, padded = pad_channels(model, multiple=lanes)
    return model, [powers, lifted, shuffled, folded, grouped, padded]


PIPELINES: dict[str, Pipeline] = {
    "cpu": Pipeline(phases=_cpu, graph=_cpu_graph),
    "tvm-default": Pipeline(phases=_tvm_default),
    "gpu": Pipeline(phases=_gpu.phases, precisions=_gpu.PRECISIONS, prepare=_gpu.prepare,
                    check_lowered=_gpu_checks.check_lowered, check_library=_gpu.check_library),
    # fp32 only: PoCL, the one OpenCL device here, has no half type to prove fp16 kernels on
    "opencl": Pipeline(phases=_gpu.opencl_phases, precisions=("fp32",),
                       check_lowered=_gpu_checks.check_lowered,
                       check_library=_gpu.check_opencl_library),
}
