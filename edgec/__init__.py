"""edgec: compile a trained ONNX CNN into a native artifact for an edge device, with proof.

Public API: `compile`, `EdgecError`, and the `edgec.runtime`, `edgec.targets`, `edgec.models`
packages.
"""

from edgec.compiler import CompileResult, compile
from edgec.compiler.errors import EdgecError

__all__ = ["CompileResult", "EdgecError", "compile"]
__version__ = "0.1.0"
