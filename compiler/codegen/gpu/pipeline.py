"""The GPU pipelines' phases: `gpu` (CUDA targets) and `opencl` (OpenCL targets: PoCL here,
Mali and Adreno phones).

    dispatch   TVM's library dispatch for CUDA (sampling, sort and scan)
    precision  with --precision fp16: every op in float16 where TVM's ToMixedPrecision allows,
               sums in float32; the model's inputs and outputs stay float32 (a model it cannot
               convert is refused in one line)
    legalize   TVM's legalization to TIR kernels, constants folded, kernels fused
    schedule   dlight's GPU rules, the floor every kernel gets: Matmul (convs as implicit
               GEMM, dense layers), GEMV, Reduction, GeneralReduction (softmax, pooling over
               the whole plane; neither on grouped convs), edgec's PerOutput (kernels of
               several stages), Fallback (elementwise, depthwise, windowed pooling); the
               first rule that applies and builds takes a kernel (schedule.py)
    lower      TVM's lowering to the VM (memory planning, CUDA graph capture of static parts)

`opencl` has the same phases on TVM's generic GPU backend (no library dispatch, no CUDA
graphs); its schedule phase tries dlight's Adreno rules first (conv2d, pooling, layout
transforms, written for mobile GPUs' OpenCL) and then the GPU rules above. Its kernels stay
OpenCL C in the library, compiled by the device's driver when the artifact loads.

Before the TIR build, checks.check_lowered refuses a kernel left without a GPU thread binding.
A CUDA build compiles the kernels with nvcc (nvcc.py) and its export is checked for the
target's machine code (checks.check_library); an OpenCL export is checked for every kernel's
source (checks.check_opencl_library).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .schedule import schedule_pass

PRECISIONS = ("fp32", "fp16")


def dlight_rules() -> list[Any]:
    """The GPU rules, in the order they are tried on each kernel: dlight's, with edgec's
    PerOutput (per_output.py) before Fallback, which races on kernels of several stages, and
    no Reduction/GeneralReduction on grouped convs (schedule.py)."""
    from tvm.s_tir import dlight as dl

    from .per_output import PerOutput
    from .schedule import Except

    grouped = ("group_conv",)  # schedule.py: Reduction's epilogue is wrong on grouped convs
    return [dl.gpu.Matmul(), dl.gpu.GEMV(), Except(dl.gpu.Reduction(), grouped),
            Except(dl.gpu.GeneralReduction(), grouped), PerOutput(), dl.gpu.Fallback()]


def _ffi_error(cls: type) -> None:
    """Let `cls` raised inside a TVM pass reach the caller as itself (not a RuntimeError)."""
    import tvm_ffi

    try:
        tvm_ffi.register_error(cls.__name__, cls)
    except ValueError:  # registered already
        pass


def _half() -> Any:
    """ToMixedPrecision to float16; where TVM cannot convert a model (ops with non-tensor
    arguments such as clip's bounds: ReLU6, hard-swish), an EdgecError saying so."""
    import tvm
    from tvm import relax

    from edgec.errors import EdgecError

    _ffi_error(EdgecError)

    @tvm.transform.module_pass(opt_level=0, name="EdgecHalf")
    def half(mod: Any, _ctx: Any) -> Any:
        try:
            return relax.transform.ToMixedPrecision(out_dtype="float16")(mod)
        except Exception as err:  # TVM's check failures carry a C++ trace: keep one line
            line = next((ln for ln in str(err).splitlines() if "Check failed" in ln),
                        str(err).splitlines()[0] if str(err) else type(err).__name__)
            raise EdgecError("--precision fp16: TVM's ToMixedPrecision cannot convert this "
                             f"model ({line.strip()[:160]}); build it in fp32") from None

    return half


def adreno_rules() -> list[Any]:
    """dlight's rules for mobile GPUs' OpenCL, tried before the GPU rules."""
    from tvm.s_tir import dlight as dl

    return [dl.adreno.Conv2d(), dl.adreno.LayoutTransform(), dl.adreno.Pool2D()]


Phases = list[tuple[str, list[Any]]]


def _phases(stock: Any, tvm_target: Any, lowering: Any, rules: list[Any]) -> Phases:
    from tvm import relax

    precision = [_half()] if getattr(lowering, "precision", "fp32") == "fp16" else []
    return [
        ("dispatch", stock.library_dispatch_passes(tvm_target)),
        ("precision", precision),
        ("legalize", [relax.transform.LegalizeOps(), relax.transform.AnnotateTIROpPattern(),
                      relax.transform.FoldConstant(), relax.transform.FuseOps(),
                      relax.transform.FuseTIR()]),
        ("schedule", [schedule_pass(rules, lowering)]),
        ("lower", stock.dataflow_lower_passes(tvm_target) + stock.finalize_passes(tvm_target)),
    ]


def phases(tvm_target: Any, lowering: Any) -> Phases:
    """The `gpu` pipeline (CUDA)."""
    from tvm.relax.backend.cuda import pipeline as stock

    return _phases(stock, tvm_target, lowering, dlight_rules())


def opencl_phases(tvm_target: Any, lowering: Any) -> Phases:
    """The `opencl` pipeline."""
    from tvm.relax.backend.gpu_generic import pipeline as stock

    return _phases(stock, tvm_target, lowering, adreno_rules() + dlight_rules())


def prepare() -> None:
    """Before the TIR build: TVM's CUDA runtime loaded (on a stand-in driver where there is
    none), edgec's nvcc registered as the compile callback."""
    from .nvcc import compile_callback, cuda_runtime

    cuda_runtime()
    compile_callback()


def check_library(path: Path, tvm_target: Any) -> list[tuple[str, str]]:
    from .checks import check_library as check

    return check(path, str(tvm_target.attrs.get("arch", "")))


def check_opencl_library(path: Path, _tvm_target: Any) -> dict[str, list[str]]:
    from .checks import check_opencl_library as check

    return check(path)
