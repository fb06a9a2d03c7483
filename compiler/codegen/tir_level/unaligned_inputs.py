"""Let the kernels that read a model's inputs take them at any address: calls without a copy.

Pattern: in the lowered `main`, a parameter (a model input) used only as an argument of
PrimFunc calls and by the VM's own type and shape checks of it. Rewrite: those PrimFuncs'
parameters declare the alignment of their element type (4 bytes for float32) instead of
TVM's 64, so LLVM emits unaligned vector loads from them (`align 4`, not `align 64`; on x86
and aarch64 they run as fast as aligned ones on aligned data). The runtime can then hand a
numpy array at any address to the model through DLPack instead of copying it into an
aligned tensor first: MobileNetV2's 600 KB input copy was ~1% of its call (A/B in one
process), and the copy's second 600 KB also competes for the cache with the weights.

An input used any other way (returned, reshaped into a view, passed to a builtin) keeps the
64 bytes, and the report says why; so does one whose kernel does not survive the rewrite.
The rewrite goes through TVMScript: TVM 0.27's PrimFunc.specialize refuses to change a
buffer's alignment and its Python API has no TIR mutator, so the kernel is printed, its
parameter's annotation given `align=`, and parsed back.
"""

from __future__ import annotations

from typing import Any

from edgec.compiler.passes.report import PassReport
from edgec.runtime.artifact import ALIGNED  # what TVM's kernels assume of every argument

# The VM's checks of a parameter, which read its metadata, not its data.
_CHECKS = ("vm.builtin.check_tensor_info", "vm.builtin.match_shape")


def unaligned_inputs(mod: Any) -> tuple[Any, PassReport, list[int]]:
    """`mod` with every input-reading kernel relaxed, the report, and each input's alignment.

    The alignment list follows `main`'s parameters: the bytes a caller's data pointer for
    that input must be a multiple of.
    """
    from tvm import relax, tirx

    report = PassReport("unaligned inputs")
    main = mod["main"]
    params = list(main.params)
    uses: dict[int, list[tuple[Any, int]]] = {i: [] for i in range(len(params))}
    blocked: dict[int, str] = {}

    def note_other(expr: Any, what: str) -> None:
        for var in relax.analysis.free_vars(expr):
            if var in params:
                blocked.setdefault(params.index(var), what)

    for block in main.body.blocks:
        for binding in block.bindings:
            value = binding.value
            callee = value.op if isinstance(value, relax.Call) else None
            if isinstance(callee, relax.GlobalVar) and isinstance(mod[callee], tirx.PrimFunc):
                for pos, arg in enumerate(value.args):
                    if isinstance(arg, relax.Var) and arg in params:
                        uses[params.index(arg)].append((callee, pos))
            elif isinstance(callee, relax.ExternFunc) and callee.global_symbol in _CHECKS:
                continue
            elif callee is not None:
                note_other(value, f"passed to {getattr(callee, 'name', None) or callee}")
            else:  # a tuple or alias of it: the caller's own tensor may leave as an output
                note_other(value, f"held in a {type(value).__name__}")
    note_other(main.body.body, "returned as an output")

    alignment = []
    relaxed: dict[Any, Any] = {}
    for i, param in enumerate(params):
        why = blocked.get(i) or (None if uses[i] else "read by no kernel")
        elem = _bytes(param.ty.dtype)
        if why is None:
            try:
                for callee, pos in uses[i]:
                    func = relaxed.get(callee, mod[callee])
                    if func.params[pos].ty.data_alignment > elem:
                        relaxed[callee] = _with_alignment(func, pos, elem)
            except Exception as err:  # a kernel TVMScript does not print and parse back
                why = f"its kernel did not round-trip: {str(err).splitlines()[0][:80]}"
        if why is None:
            report.count("inputs")
        else:
            report.decline(param.name, why)
        alignment.append(ALIGNED if why else elem)
    if relaxed:
        mod = mod.clone()
        for callee, func in relaxed.items():
            mod.update_func(callee, func)
    return mod, report, alignment


def _bytes(dtype: str) -> int:
    import numpy as np

    return np.dtype(str(dtype)).itemsize


def _with_alignment(func: Any, pos: int, align: int) -> Any:
    """`func` with its parameter `pos` declared `align`-byte aligned (TVMScript round trip)."""
    import tvm

    text = func.script()
    opened = text.index("(", text.index("def "))
    params, closed = _signature(text, opened)
    name, annotation = params[pos].split(":", 1)
    if not annotation.strip().startswith("T.Buffer("):
        raise ValueError(f"parameter {name} is not a buffer")
    params[pos] = params[pos][:params[pos].rindex(")")] + f", align={align})"
    new = tvm.script.from_source(text[:opened + 1] + ", ".join(params) + text[closed:])
    for key, value in func.attrs.items():
        new = new.with_attr(key, value)
    if new.params[pos].ty.data_alignment != align:
        raise ValueError("alignment did not take")
    return new


def _signature(text: str, opened: int) -> tuple[list[str], int]:
    """The parameters of the signature whose "(" is at `opened`, and where its ")" is."""
    parts, depth, last = [], 0, opened + 1
    for k in range(opened, len(text)):
        depth += {"(": 1, "[": 1, ")": -1, "]": -1}.get(text[k], 0)
        if depth == 0:
            tail = text[last:k].strip()
            return parts + ([tail] if tail else []), k
        if text[k] == "," and depth == 1:
            parts.append(text[last:k].strip())
            last = k + 1
    raise ValueError("unbalanced signature")
