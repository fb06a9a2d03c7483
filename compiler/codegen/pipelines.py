"""Relax pipelines, by name; a target file picks one with `pipeline = "NAME"`.

`default` is TVM's default pipeline for the target: legalize, FoldConstant, FuseOps/FuseTIR
(plain `tvm.compile` skips the fusion on CPU targets and leaves one kernel per op), default
schedules. Tuned and hand-scheduled pipelines plug in here as further entries.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any


def _default(tvm_target: Any) -> Any:
    from tvm import relax

    return relax.get_default_pipeline(tvm_target)


PIPELINES: dict[str, Callable[[Any], Any]] = {
    "default": _default,
}
