"""Relax pipelines, by name; a target file picks one with `pipeline = "NAME"`.

`cpu` (the default for llvm targets): channels-last layout (layout.py), TVM's legalization and
fusion (conv + bias + activation + residual add become one kernel), then each kernel gets the
schedule recorded for it in the tuning database when there is one, else edgec's schedule rules
(cpu_schedules.py), then lowering to the VM.

`tvm-default` is TVM's own default pipeline: NCHW, fused, and no schedules at all (serial,
scalar loops). It stays as the baseline the benchmarks compare against.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Lowering:
    """What a pipeline did to each kernel: rule name, "tuned", or "unscheduled"."""

    kernels: dict[str, str] = field(default_factory=dict)
    database: Any = None  # a MetaSchedule database whose records take precedence


def _tvm_default(tvm_target: Any, lowering: Lowering) -> Any:
    from tvm import relax

    return relax.get_default_pipeline(tvm_target)


def fused(tvm_target: Any) -> Any:
    """The `cpu` pipeline up to its kernels: channels-last, legalized, fused, unscheduled.

    Tuning extracts its tasks here, so the kernels it tunes are exactly the ones compile
    looks up in the database.
    """
    import tvm
    from tvm.relax.backend.cpu_generic import pipeline as stock

    from .layout import channels_last

    @tvm.transform.module_pass(opt_level=0, name="EdgecChannelsLast")
    def layout(mod: Any, _ctx: Any) -> Any:
        return channels_last(mod)

    return tvm.transform.Sequential(stock.library_dispatch_passes(tvm_target) + [layout]
                                    + stock.legalize_passes(tvm_target))


def _cpu(tvm_target: Any, lowering: Lowering) -> Any:
    import tvm
    from tvm.relax.backend.cpu_generic import pipeline as stock

    from .cpu_schedules import schedule_pass

    tuned = []
    if lowering.database is not None:
        from .tuned import apply_database

        tuned = [apply_database(tvm_target, lowering)]
    return tvm.transform.Sequential(
        [fused(tvm_target)] + tuned + [schedule_pass(tvm_target, lowering.kernels)]
        + stock.dataflow_lower_passes(tvm_target) + stock.finalize_passes(tvm_target)
    )


PIPELINES: dict[str, Callable[[Any, Lowering], Any]] = {
    "cpu": _cpu,
    "tvm-default": _tvm_default,
}
