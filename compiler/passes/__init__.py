"""ONNX -> ONNX passes. Each is a pure `fn(model) -> (model, PassReport)`, one per module.

`PASSES` is the flat registry the compile pipeline and `edgec optimize` run, in this order.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import onnx

from edgec.errors import EdgecError

from .cleanup import cleanup
from .fold_batchnorm import fold_batchnorm
from .fold_constants import fold_constants
from .report import PassReport

Pass = Callable[[onnx.ModelProto], tuple[onnx.ModelProto, PassReport]]

PASSES: dict[str, Pass] = {
    "cleanup": cleanup,
    "fold_batchnorm": fold_batchnorm,
}

__all__ = ["PASSES", "PassReport", "cleanup", "describe", "fold_batchnorm", "fold_constants",
           "run_passes"]


def describe() -> dict[str, str]:
    """Pass name -> the first line of its module docstring (for --list-passes)."""
    import sys

    return {name: (sys.modules[fn.__module__].__doc__ or "").strip().splitlines()[0]
            for name, fn in PASSES.items()}


def select(only: Iterable[str] | None = None, skip: Iterable[str] = ()) -> list[str]:
    names = list(only) if only else list(PASSES)
    unknown = [n for n in [*names, *skip] if n not in PASSES]
    if unknown:
        raise EdgecError(f"unknown pass '{unknown[0]}'; passes: {', '.join(PASSES)}")
    return [n for n in names if n not in set(skip)]


def run_passes(model: onnx.ModelProto, names: list[str]) -> tuple[onnx.ModelProto,
                                                                   list[PassReport]]:
    reports = []
    for name in names:
        model, report = PASSES[name](model)
        reports.append(report)
    return model, reports
