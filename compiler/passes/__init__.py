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

from .blockdiag import BlockDiagOptions, blockdiag
from .cleanup import cleanup
from .fold_batchnorm import fold_batchnorm
from .fold_constants import fold_constants
from .grouped import GroupedOptions, grouped
from .report import PassReport
from .rules import Rule, apply_rules
from .separable import SeparableOptions, separable


@dataclass(frozen=True)
class Pass:
    """A registered pass and its metadata."""

    name: str
    run: Callable[..., tuple[onnx.ModelProto, PassReport]]  # (model[, options])
    exact: bool = True  # False: lossy, judged by task accuracy, never by tolerance alone
    needs_data: bool = False  # needs the user's inputs (calibration, accuracy budget)
    options: type | None = None  # the dataclass of its options, if it has any

    def __call__(self, model: onnx.ModelProto,
                 options: object | None = None) -> tuple[onnx.ModelProto, PassReport]:
        if options is not None and not isinstance(options, self.options or ()):
            raise EdgecError(f"pass '{self.name}' takes "
                             f"{self.options.__name__ if self.options else 'no'} options")
        return self.run(model, options) if self.options else self.run(model)

    @property
    def summary(self) -> str:
        """The first line of its module's docstring."""
        doc = sys.modules[self.run.__module__].__doc__ or ""
        return doc.strip().splitlines()[0] if doc.strip() else self.name


PASSES: dict[str, Pass] = {p.name: p for p in [
    Pass("cleanup", cleanup),
    Pass("fold_batchnorm", fold_batchnorm),
    Pass("separable", separable, exact=False, options=SeparableOptions),
    Pass("grouped", grouped, exact=False, options=GroupedOptions),
    Pass("blockdiag", blockdiag, exact=False, options=BlockDiagOptions),
]}

__all__ = ["PASSES", "BlockDiagOptions", "GroupedOptions", "Pass", "PassReport", "Rule",
           "SeparableOptions", "apply_rules", "blockdiag", "cleanup", "describe",
           "fold_batchnorm", "fold_constants", "grouped", "run_passes", "select", "separable"]


def describe() -> dict[str, str]:
    """Pass name -> its summary and kind (for --list-passes)."""
    return {name: f"{p.summary} [{'exact' if p.exact else 'lossy'}"
                  f"{', needs data' if p.needs_data else ''}]"
            for name, p in PASSES.items()}


def select(only: Iterable[str] | None = None, skip: Iterable[str] = ()) -> list[str]:
    """The passes to run: `only` (in that order), else every exact pass; a lossy pass runs
    only where named."""
    names = list(only) if only else [n for n, p in PASSES.items() if p.exact]
    unknown = [n for n in [*names, *skip] if n not in PASSES]
    if unknown:
        raise EdgecError(f"unknown pass '{unknown[0]}'; passes: {', '.join(PASSES)}")
    return [n for n in names if n not in set(skip)]


def run_passes(model: onnx.ModelProto, names: list[str],
               options: dict[str, object] | None = None) -> tuple[onnx.ModelProto,
                                                                  list[PassReport]]:
    """Run the named passes in order, each with its options from `options` (by pass name)."""
    reports = []
    for name in names:
        model, report = PASSES[name](model, (options or {}).get(name))
        reports.append(report)
    return model, reports
