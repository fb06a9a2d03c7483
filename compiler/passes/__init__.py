"""ONNX -> ONNX passes. Each is a pure `fn(model) -> (model, report)`, one per module.

`PASSES` is the flat registry the compile pipeline and `edgec optimize` read, in run order.
"""

from __future__ import annotations

from .fold_constants import fold_constants

PASSES = {
    "fold_constants": fold_constants,
}
