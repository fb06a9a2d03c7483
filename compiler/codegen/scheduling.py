"""The schedule phase's module pass, shared by the `cpu` and GPU pipelines.

Each kernel (PrimFunc) not yet scheduled goes to the pipeline's chooser, which returns the
name of the rule that took it and the scheduled kernel, or ("unscheduled", None); the kernel
is replaced by the scheduled one (marked `tirx.is_scheduled`), and the rule's name recorded
in `kernels` under the kernel's name for the compile summary.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

Chooser = Callable[[Any], tuple[str, Any]]  # PrimFunc -> (rule name, scheduled PrimFunc | None)


def schedule_kernels(name: str, choose: Chooser, kernels: dict[str, str] | None) -> Any:
    """A module pass named `name` scheduling every unscheduled kernel by `choose`."""
    import tvm
    from tvm import tirx

    @tvm.transform.module_pass(opt_level=0, name=name)
    def apply(mod: Any, _ctx: Any) -> Any:
        done = {}
        for gv, func in mod.functions_items():
            if not isinstance(func, tirx.PrimFunc) or func.attrs.get("tirx.is_scheduled"):
                continue
            rule, scheduled = choose(func)
            if kernels is not None:
                kernels[gv.name_hint] = rule
            if scheduled is not None:
                done[gv] = scheduled.with_attr("tirx.is_scheduled", True)
        for gv, func in done.items():
            mod[gv] = func
        return mod

    return apply
