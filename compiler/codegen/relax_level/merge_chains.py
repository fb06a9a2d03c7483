"""Merge each conv kernel into the depthwise conv kernel that is the only reader of its output.

    y = call_tir(conv_k, (x, w1, b1, ...))          z = call(merged, (x, w1, b1, ..., w2, b2, ...))
    z = call_tir(dw_k, (y, w2, b2, ...))     ->     merged: both kernels as one PrimFunc, with
                                                    y an internal buffer (FuseTIR)

This is the expand -> depthwise pair of every inverted residual block (MobileNetV2/V3) and the
pointwise -> depthwise pair of MobileNetV1 and ShuffleNetV2. TVM's FuseOps never puts two
convs in one kernel; here the pair becomes one, so its schedule (cpu/chains.py) can produce y
one channel chunk at a time and hand it to the depthwise conv while it is in cache. The
arithmetic is unchanged, so outputs are the same to the last bit: only where y lives changes.

Runs on the legalized, fused module (after FuseTIR), so both kernels already carry their
epilogues (bias, activation). A pair merges only when both kernels have the single S..SR..R
block of a 2-D NHWC conv and y has no other reader.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from edgec.compiler.codegen.cpu.chains import kind


def _call_tir(expr: Any) -> Any | None:
    """The callee GlobalVar of a `call_tir` expression, else None."""
    import tvm
    from tvm import relax

    if isinstance(expr, relax.Call) and expr.op.same_as(tvm.ir.Op.get("relax.call_tir")) \
            and len(expr.args) == 2:
        return expr.args[0]
    return None


def _merged_function(mod: Any, name: str, first: Any, second: Any) -> tuple[Any, list[Any]]:
    """A primitive Relax function calling both kernels, and the arguments to call it with."""
    from tvm import relax

    args_a, args_b = list(first.value.args[1].fields), list(second.value.args[1].fields)[1:]
    params = [relax.Var(f"p{i}", a.ty) for i, a in enumerate(args_a + args_b)]
    bb = relax.BlockBuilder(mod)
    with bb.function(name, params, attrs={"Primitive": True}, private=True):
        with bb.dataflow():
            y = bb.emit(relax.call_tir(first.value.args[0], params[: len(args_a)],
                                       out_ty=first.var.ty))
            z = bb.emit_output(relax.call_tir(second.value.args[0], [y, *params[len(args_a):]],
                                              out_ty=second.var.ty))
        bb.emit_func_output(z)
    return bb.get()[name], args_a + args_b


def _pairs(mod: Any, first_ok: Callable[[Any], bool],
           second_ok: Callable[[Any], bool]) -> dict[Any, tuple[Any, Any]]:
    """Second binding's var -> (first binding, second binding) in `main`, for each kernel
    call that `first_ok` takes whose output only a `second_ok` kernel reads, as its first
    argument."""
    from tvm import relax

    main = mod["main"]
    uses: dict[Any, int] = {}

    def count(expr: Any) -> None:
        if isinstance(expr, relax.Var):
            uses[expr] = uses.get(expr, 0) + 1

    relax.analysis.post_order_visit(main.body, count)
    seen: dict[tuple[str, Callable[[Any], bool]], bool] = {}

    def check(ok: Callable[[Any], bool], gv: Any) -> bool:
        key = (gv.name_hint, ok)
        if key not in seen:
            seen[key] = ok(mod[gv])
        return seen[key]

    producers, pairs = {}, {}
    bindings = [b for block in main.body.blocks for b in block.bindings]
    for binding in bindings:
        gv = _call_tir(binding.value)
        if gv is not None and uses.get(binding.var) == 1 and check(first_ok, gv):
            producers[binding.var] = binding
    for binding in bindings:
        gv = _call_tir(binding.value)
        if gv is not None and binding.value.args[1].fields:
            first = producers.get(binding.value.args[1].fields[0])
            if first is not None and check(second_ok, gv):
                pairs[binding.var] = (first, binding)
    return pairs


def _merge(mod: Any, pairs: dict[Any, tuple[Any, Any]]) -> Any:
    from tvm import relax

    main = mod["main"]
    bb = relax.BlockBuilder(mod)
    merged, dropped = {}, set()
    for var, (first, second) in pairs.items():
        name = f"{first.value.args[0].name_hint}_{second.value.args[0].name_hint}"
        func, args = _merged_function(mod, name, first, second)
        merged[var] = relax.Call(bb.add_func(func, name), args)
        dropped.add(first.var)
    blocks = []
    for block in main.body.blocks:
        bindings = [relax.VarBinding(b.var, merged[b.var]) if b.var in merged else b
                    for b in block.bindings if b.var not in dropped]
        blocks.append(relax.DataflowBlock(bindings) if isinstance(block, relax.DataflowBlock)
                      else relax.BindingBlock(bindings))
    out = bb.get()
    out["main"] = relax.Function(main.params, relax.SeqExpr(blocks, main.body.body),
                                 main.ret_ty, main.is_pure, main.attrs, main.span)
    out = relax.transform.FuseTIR()(out)
    return relax.transform.DeadCodeElimination()(out)


def merge_conv_depthwise(mod: Any, accept: Callable[[Any], bool] | None = None) -> Any:
    """`mod` with every conv -> depthwise pair of `main` merged into one kernel. `accept`
    vets each merged kernel (a PrimFunc), e.g. that a schedule takes it: a pair it rejects
    stays two kernels, each of which the ordinary rules schedule."""
    return merge_pairs(mod, lambda f: kind(f) == "conv", lambda f: kind(f) == "depthwise",
                       accept)


def merge_pairs(mod: Any, first_ok: Callable[[Any], bool], second_ok: Callable[[Any], bool],
                accept: Callable[[Any], bool] | None = None) -> Any:
    """`mod` with each kernel call that `first_ok` takes merged into the call reading its
    output, when that call is its only reader, reads it as its first argument, and its kernel
    is one `second_ok` takes. `accept` vets each merged kernel (a PrimFunc), e.g. that a
    schedule takes it: a pair it rejects stays two kernels."""
    pairs = _pairs(mod, first_ok, second_ok)
    while pairs:
        out = _merge(mod, pairs)
        calls = {b.var: _call_tir(b.value) for block in out["main"].body.blocks
                 for b in block.bindings}
        rejected = {var for var in pairs
                    if accept is not None and not (calls.get(var) and accept(out[calls[var]]))}
        if not rejected:
            return out
        pairs = {var: pair for var, pair in pairs.items() if var not in rejected}
    return mod
