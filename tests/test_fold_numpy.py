"""fold_numpy: Relax calls on constants (channels_last's weight transposes, the importer's Clip
bounds) become constants computed by numpy; tiny graphs from onnx.helper, imported and made
channels-last as the `cpu` pipeline does; the built model against onnxruntime (1e-4 rel)."""

from __future__ import annotations

import collections

import numpy as np
import pytest
from onnx import helper, numpy_helper

from edgec import targets
from edgec.compiler import codegen
from edgec.compiler.codegen.relax_level.fold_numpy import fold_numpy
from edgec.compiler.codegen.relax_level.layout import channels_last

from conftest import build_and_check, random_const, tiny_model

RNG = np.random.default_rng(5)


def _conv_clip(bias: bool, group: int, clip: bool):
    nodes = [helper.make_node("Conv", ["x", "w", *(["b"] if bias else [])], ["c"], group=group,
                              kernel_shape=[3, 3], pads=[1] * 4)]
    inits = [random_const("w", (16, 16 // group, 3, 3), RNG)]
    inits += [random_const("b", (16,), RNG)] if bias else []
    if clip:
        nodes.append(helper.make_node("Clip", ["c", "lo", "hi"], ["y"]))
        inits += [numpy_helper.from_array(np.float32(v), n) for n, v in (("lo", 0), ("hi", 6))]
    else:
        nodes.append(helper.make_node("Relu", ["c"], ["y"]))
    return tiny_model(nodes, [1, 16, 8, 8], inits)


def _channels_last(model):
    target = targets.get("host")
    with target.tvm_target():
        return channels_last(codegen.import_model(model, target, {"x": [1, 16, 8, 8]}))


def _calls(mod) -> collections.Counter:
    """Op name -> calls in `main`, split by whether every tensor argument is a constant (or
    a variable bound to one)."""
    import tvm
    from tvm import relax
    from tvm.ir.expr import Constant

    bound, found = {}, collections.Counter()
    for block in mod["main"].body.blocks:
        for b in block.bindings:
            bound[b.var] = b.value
            if isinstance(b.value, relax.Call) and isinstance(b.value.op, tvm.ir.Op):
                args = [bound.get(a, a) for a in b.value.args if isinstance(a, relax.Expr)
                        and not isinstance(a, relax.ShapeExpr)]
                const = all(isinstance(a, Constant) for a in args)
                found[(b.value.op.name, "const" if const else "var")] += 1
    return found


def _constants(mod) -> list[np.ndarray]:
    from tvm.ir.expr import Constant

    return [b.value.value.numpy() for block in mod["main"].body.blocks for b in block.bindings
            if isinstance(b.value, Constant)]


@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("group", [1, 2, 16])
@pytest.mark.parametrize("clip", [True, False])
def test_constant_calls_fold(bias, group, clip):
    model = _conv_clip(bias, group, clip)
    mod = _channels_last(model)
    before = _calls(mod)
    assert before[("relax.permute_dims", "const")] >= 1, before
    folded, report = fold_numpy(mod)
    after = _calls(folded)
    assert not [k for k in after if k[1] == "const"], after
    assert after[("relax.nn.conv2d", "var")] == 1
    # the input's and output's NCHW <-> NHWC transposes read x: not constants, kept
    assert after[("relax.permute_dims", "var")] == 2, after
    # the bias's reshape, then its transpose of what the reshape made: folded in order
    assert report.folded["relax.permute_dims"] == 1 + bias
    assert report.folded.get("relax.reshape", 0) == bias
    assert ("relax.isnan" in report.folded) == clip
    # the weight, transposed OIHW -> HWIO by numpy
    w = numpy_helper.to_array(model.graph.initializer[0])
    assert any(c.shape == (3, 3, 16 // group, 16) and np.array_equal(c, w.transpose(2, 3, 1, 0))
               for c in _constants(folded))
    import tvm

    tvm.ir.assert_structural_equal(fold_numpy(folded)[0], folded)  # twice: nothing more
    assert not fold_numpy(folded)[1].changed


@pytest.mark.parametrize("bias, group, clip", [(True, 1, True), (False, 16, False)])
def test_folded_model_matches_onnxruntime(bias, group, clip):
    lowering = build_and_check(_conv_clip(bias, group, clip))
    assert "reduction_tile" in lowering.kernels.values(), lowering.kernels
