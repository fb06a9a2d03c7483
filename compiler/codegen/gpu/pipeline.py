"""The `gpu` pipeline's phases (a CUDA target picks it with `pipeline = "gpu"`).

    dispatch   TVM's library dispatch for CUDA (sampling, sort and scan)
    precision  with --precision fp16: every op in float16 where TVM's ToMixedPrecision allows,
               sums in float32; the model's inputs and outputs stay float32 (a model it cannot
               convert is refused in one line)
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


def phases(tvm_target: Any, lowering: Any) -> list[tuple[str, list[Any]]]:
    from tvm import relax
    from tvm.relax.backend.cuda import pipeline as stock
    from tvm.s_tir import dlight as dl

    precision = [_half()] if getattr(lowering, "precision", "fp32") == "fp16" else []
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
