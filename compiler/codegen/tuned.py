"""Schedules from the tuning database (`edgec tune`), applied before edgec's own rules.

A kernel whose loop nest (structural hash of its TIR) has a record in the target's database
gets the best record's schedule replayed; the rest fall through to cpu/schedules.py. So does a
kernel whose best record was timed inside the model and lost there to the rule's schedule
(a "rule" verdict, compiler/tuning/in_model.py).
"""

from __future__ import annotations

import hashlib
from typing import Any

from edgec.compiler.codegen.pipelines import Lowering


def record_key(database: Any, func: Any, tvm_target: Any) -> str | None:
    """Names a kernel's best record in `database`: its loop nest and its schedule's trace.

    A later search that finds a better record gives the kernel a new key, so a verdict on the
    old record does not carry over to it.
    """
    import tvm
    import tvm_ffi

    mod = tvm.get_global_func("tvm.s_tir.meta_schedule.normalize_mod")(func)
    if not database.has_workload(mod):
        return None
    record = database.query_tuning_record(mod, tvm_target, "main")
    if record is None:
        return None
    text = f"{tvm_ffi.structural_hash(mod)}:{record.trace}"
    return hashlib.sha256(text.encode()).hexdigest()[:20]


def apply_database(tvm_target: Any, lowering: Lowering) -> Any:
    import tvm
    from tvm import relax, tirx

    @tvm.transform.module_pass(opt_level=0, name="EdgecApplyTuned")
    def apply(mod: Any, _ctx: Any) -> Any:
        with tvm_target, lowering.database:
            out = relax.transform.MetaScheduleApplyDatabase(enable_warning=False)(mod)
        for gv, func in out.functions_items():
            if not isinstance(func, tirx.PrimFunc) or mod[gv].same_as(func):
                continue
            key = record_key(lowering.database, mod[gv], tvm_target)
            if key is not None and lowering.verdicts.get(key) == "rule":
                out[gv] = mod[gv]  # left to the rules, as without a database
                lowering.kept.append(gv.name_hint)
                continue
            lowering.kernels[gv.name_hint] = "tuned"
            if key is not None:
                lowering.records[gv.name_hint] = key
            if not func.attrs.get("tirx.is_scheduled"):
                out[gv] = func.with_attr("tirx.is_scheduled", True)
        return out

    return apply
