"""The GPU pipelines' schedule phase: each kernel gets the first rule that schedules it into
code that builds.

dlight's ApplyDefaultSchedule takes the first rule whose `apply` returns a schedule. Some of
its rules raise on kernels they do not expect (a fused SE gate: "consumers of the cache-write
stage not inlined"; a kernel of unit loops: "'fuse' requires at least 1 loop"), and some
return a schedule the build then rejects (Reduction and GeneralReduction on grouped convs:
"cross-thread reduction requires all the reduction-related loops to be the deepest"), which
fails the whole model. Here a rule that raises, or whose schedule fails TVM's cross-thread
reduction lowering, is passed over for the next one. Reduction and GeneralReduction are not
tried on grouped convs at all (`Except`): on a grouped conv whose groups hold several output
channels, Reduction's epilogue reads thread-local sums of other threads (NaN and garbage on
PoCL), a schedule that builds and is wrong. The kernel records which rule took it
(lowering.kernels: its rule_name, or "unscheduled" where none did; the compile summary counts
them).
"""

from __future__ import annotations

import re
from typing import Any


class Except:
    """`rule`, declining kernels that hold a stage (SBlock) whose name starts with one of
    `prefixes` (TVM's legalization names stages after the op: "group_conv2d_nchw", ...)."""

    def __init__(self, rule: Any, prefixes: tuple[str, ...]):
        self.rule, self.prefixes = rule, prefixes

    def apply(self, func: Any, target: Any, tunable: bool) -> Any:
        names = re.findall(r'T\.sblock\("([^"]+)"', func.script())
        if any(n.startswith(self.prefixes) for n in names):
            return None
        return self.rule.apply(func, target, tunable)


def rule_name(rule: Any) -> str:
    """"adreno.Conv2d", "gpu.Matmul": a dlight rule by its family and class; edgec's own
    rules as "edgec.NAME"."""
    rule = getattr(rule, "rule", rule)
    module = type(rule).__module__
    family = "edgec" if module.startswith("edgec.") else module.split(".")[-2]
    return f"{family}.{type(rule).__name__}"


def _builds(func: Any) -> bool:
    """Whether a scheduled kernel survives the TIR lowering step that rejects misplaced
    cross-thread reductions."""
    import tvm
    from tvm import s_tir

    try:
        s_tir.transform.LowerCrossThreadReduction()(tvm.IRModule({"main": func}))
    except Exception:  # noqa: BLE001 - TVM raises its own error types here
        return False
    return True


def first_rule(func: Any, target: Any, rules: list[Any]) -> tuple[Any, str]:
    """The kernel as the first rule that applies schedules it (and that builds), with that
    rule's name; (None, "unscheduled") where none does."""
    for rule in rules:
        try:
            space = rule.apply(func, target, False)
        except Exception:  # noqa: BLE001 - a rule that cannot take this kernel
            continue
        if space is None:
            continue
        sch = space[0] if isinstance(space, list) else space
        scheduled = sch.mod["main"].with_attr("tirx.is_scheduled", True)
        if _builds(scheduled):
            return scheduled, rule_name(rule)
    return None, "unscheduled"


def schedule_pass(rules: list[Any], lowering: Any) -> Any:
    """The schedule phase as a module pass (module docstring; codegen/scheduling.py)."""
    import tvm

    from edgec.compiler.codegen.scheduling import schedule_kernels

    def choose(func: Any) -> tuple[str, Any]:
        target = func.attrs.get("target") or tvm.target.Target.current(allow_none=False)
        scheduled, taken = first_rule(func, target, rules)
        return taken, scheduled

    kernels = lowering.kernels if lowering is not None else None
    return schedule_kernels("EdgecGpuSchedule", choose, kernels)
