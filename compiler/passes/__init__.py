"""ONNX -> ONNX passes: named objects in one flat registry, run in its order.

Each pass is a pure `run(model) -> (model, PassReport)` in its own module, whose docstring
states its patterns and their math; rule-based passes use rules.py (match -> check ->
rewrite, every declined match with its reason). `Pass` adds what a pipeline must know before
running one: whether it is exact (outputs equal up to float rounding, checked against
onnxruntime) or lossy (judged by accuracy on the user's data), whether it needs data, and
the dataclass of its options. `PASSES` is the registry compile and `edgec optimize` run.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import onnx

from edgec.errors import EdgecError

from .cleanup import cleanup
from .fold_batchnorm import fold_batchnorm
from .fold_constants import fold_constants
from .report import PassReport
from .rules import Rule, apply_rules


@dataclass(frozen=True)
class Pass:
    """A registered pass and its metadata."""

    name: str
    run: Callable[[onnx.ModelProto], tuple[onnx.ModelProto, PassReport]]
    exact: bool = True  # False: lossy, judged by task accuracy, never by tolerance alone
    needs_data: bool = False  # needs the user's inputs (calibration, accuracy budget)
    options: type | None = None  # the dataclass of its options, if it has any

    def __call__(self, model: onnx.ModelProto) -> tuple[onnx.ModelProto, PassReport]:
        return self.run(model)

    @property
    def summary(self) -> str:
        """The first line of its module's docstring."""
        doc = sys.modules[self.run.__module__].__doc__ or ""
        return doc.strip().splitlines()[0] if doc.strip() else self.name


PASSES: dict[str, Pass] = {p.name: p for p in [
    Pass("cleanup", cleanup),
    Pass("fold_batchnorm", fold_batchnorm),
]}

__all__ = ["PASSES", "Pass", "PassReport", "Rule", "apply_rules", "cleanup", "describe",
           "fold_batchnorm", "fold_constants", "run_passes", "select"]


def describe() -> dict[str, str]:
    """Pass name -> its summary and kind (for --list-passes)."""
    return {name: f"{p.summary} [{'exact' if p.exact else 'lossy'}"
                  f"{', needs data' if p.needs_data else ''}]"
            for name, p in PASSES.items()}


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
