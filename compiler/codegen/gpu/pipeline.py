"""The `gpu` pipeline's phases (a CUDA target picks it with `pipeline = "gpu"`).

    dispatch   TVM's library dispatch for CUDA (sampling, sort and scan)
    precision  with --precision fp16: every op in float16 where TVM's ToMixedPrecision allows,
               sums in float32; the model's inputs and outputs stay float32
    legalize   TVM's legalization to TIR kernels, constants folded, kernels fused
    schedule   dlight's GPU rules, the floor every kernel gets: Matmul (convs as implicit
               GEMM, dense layers), GEMV, Reduction, GeneralReduction (softmax, pooling over
               the whole plane), Fallback (elementwise, depthwise, windowed pooling)
    lower      TVM's lowering to the VM (memory planning, CUDA graph capture of static parts)

Before the TIR build, checks.check_lowered refuses a kernel left without a GPU thread binding;
the build compiles the kernels with nvcc (nvcc.py) and the export is checked for the target's
machine code (checks.check_library).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

PRECISIONS = ("fp32", "fp16")


def dlight_rules() -> list[Any]:
    """The dlight GPU rules, in the order they are tried on each kernel."""
    from tvm.s_tir import dlight as dl

    return [dl.gpu.Matmul(), dl.gpu.GEMV(), dl.gpu.Reduction(), dl.gpu.GeneralReduction(),
            dl.gpu.Fallback()]


def phases(tvm_target: Any, lowering: Any) -> list[tuple[str, list[Any]]]:
    from tvm import relax
    from tvm.relax.backend.cuda import pipeline as stock
    from tvm.s_tir import dlight as dl

    precision = []
    if getattr(lowering, "precision", "fp32") == "fp16":
        precision = [relax.transform.ToMixedPrecision(out_dtype="float16")]
    return [
        ("dispatch", stock.library_dispatch_passes(tvm_target)),
        ("precision", precision),
        ("legalize", [relax.transform.LegalizeOps(), relax.transform.AnnotateTIROpPattern(),
                      relax.transform.FoldConstant(), relax.transform.FuseOps(),
                      relax.transform.FuseTIR()]),
        ("schedule", [dl.ApplyDefaultSchedule(*dlight_rules())]),
        ("lower", stock.dataflow_lower_passes(tvm_target) + stock.finalize_passes(tvm_target)),
    ]


def prepare() -> None:
    """Before the TIR build: TVM's CUDA runtime loaded (on a stand-in driver where there is
    none), edgec's nvcc registered as the compile callback."""
    from .nvcc import compile_callback, cuda_runtime

    cuda_runtime()
    compile_callback()


def check_library(path: Path, tvm_target: Any) -> list[tuple[str, str]]:
    from .checks import check_library as check

    return check(path, str(tvm_target.attrs.get("arch", "")))
