"""Schedules from the tuning database (`edgec tune`), applied before edgec's own rules.

A kernel whose loop nest (structural hash of its TIR) has a record in the target's database
gets the best record's schedule replayed; the rest fall through to cpu_schedules.py.
"""

from __future__ import annotations

from typing import Any

from .pipelines import Lowering


def apply_database(tvm_target: Any, lowering: Lowering) -> Any:
    import tvm
    from tvm import relax, tirx

    @tvm.transform.module_pass(opt_level=0, name="EdgecApplyTuned")
    def apply(mod: Any, _ctx: Any) -> Any:
        with tvm_target, lowering.database:
            out = relax.transform.MetaScheduleApplyDatabase(enable_warning=False)(mod)
        for gv, func in out.functions_items():
            if isinstance(func, tirx.PrimFunc) and not mod[gv].same_as(func):
                lowering.kernels[gv.name_hint] = "tuned"
                if not func.attrs.get("tirx.is_scheduled"):
                    out[gv] = func.with_attr("tirx.is_scheduled", True)
        return out

    return apply
