"""edgec: compile a trained ONNX CNN into a native artifact for an edge device, with proof.

Public API: `compile`, `EdgecError`, and the `edgec.runtime`, `edgec.targets`, `edgec.models`
packages.
"""

import os

# TVM sizes its thread pool once, at its first parallel kernel, and then to half the cores
# unless TVM_NUM_THREADS says otherwise; it cannot grow later. edgec's targets and runtime pick
# thread counts themselves (up to all cores), so the pool must start with all of them.
os.environ.setdefault("TVM_NUM_THREADS", str(os.cpu_count() or 1))

from edgec.errors import EdgecError  # noqa: E402

__all__ = ["CompileResult", "EdgecError", "compile"]
__version__ = "0.1.0"


def __getattr__(name: str):
    """`compile` and `CompileResult` load the compiler on first use: a program that only runs
    artifacts (edgec.runtime) never imports it."""
    if name in ("compile", "CompileResult"):
        from edgec import compiler

        return getattr(compiler, name)
    raise AttributeError(f"module 'edgec' has no attribute '{name}'")
