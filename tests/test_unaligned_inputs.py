"""unaligned_inputs: the kernels reading a model input declare its element size as their
alignment, so the runtime hands numpy arrays at any address to the model without a copy.
Tiny graphs from onnx.helper, built for the host; outputs against onnxruntime
(ORT_DISABLE_ALL) within 1e-4 relative, with the input placed off every 64-byte boundary."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from edgec import targets
from edgec.compiler import codegen
from edgec.compiler.codegen.tir_level.unaligned_inputs import unaligned_inputs

from conftest import ort_run, random_const, tiny_model

RNG = np.random.default_rng(0)


def _relu_conv():  # an elementwise kernel reads x first (vector loads of the input)
    nodes = [helper.make_node("Relu", ["x"], ["r"]),
             helper.make_node("Conv", ["r", "w"], ["y"], kernel_shape=[1, 1])]
    return tiny_model(nodes, [1, 16, 8, 8], [random_const("w", (8, 16, 1, 1), RNG)])


def _stem(bias: bool, stride: int):  # the NCHW -> NHWC transpose merges into the conv
    nodes = [helper.make_node("Conv", ["x", "w", *(["b"] if bias else [])], ["y"],
                              kernel_shape=[3, 3], strides=[stride] * 2, pads=[1] * 4)]
    inits = [random_const("w", (16, 3, 3, 3), RNG)] + ([random_const("b", (16,), RNG)]
                                                      if bias else [])
    return tiny_model(nodes, [1, 3, 32, 32], inits)


def _dense():  # Gemm reads x directly
    nodes = [helper.make_node("Gemm", ["x", "w", "b"], ["y"], transB=1)]
    return tiny_model(nodes, [1, 256], [random_const("w", (40, 256), RNG),
                                       random_const("b", (40,), RNG)])


def _reshape_relu():  # the kernel reads x flattened; with 64 bytes assumed, this one segfaults
    nodes = [helper.make_node("Reshape", ["x", "s"], ["r"]),
             helper.make_node("Relu", ["r"], ["y"])]
    return tiny_model(nodes, [1, 16, 8, 8], {"s": np.array([1, 1024], np.int64)})


def _placed(x: np.ndarray, offset: int) -> np.ndarray:
    raw = np.empty(x.nbytes + 128, np.uint8)
    start = (-raw.ctypes.data) % 64 + offset
    out = raw[start:start + x.nbytes].view(x.dtype).reshape(x.shape)
    out[...] = x
    return out


def _lowered(model: onnx.ModelProto):
    shape = [d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim]
    lowering = codegen.Lowering()
    return codegen.lower(model, targets.get("host"), {"x": shape}, lowering), lowering, shape


def _input_alignments(mod) -> list[int]:
    """The alignment each kernel parameter that receives main's first input declares."""
    import tvm
    from tvm import relax

    x = mod["main"].params[0]
    found = []
    for block in mod["main"].body.blocks:
        for binding in block.bindings:
            call = binding.value
            if isinstance(call, relax.Call) and isinstance(call.op, relax.GlobalVar) \
                    and isinstance(mod[call.op], tvm.tirx.PrimFunc):
                func = mod[call.op]
                found += [func.params[k].ty.data_alignment
                          for k, arg in enumerate(call.args) if arg.same_as(x)]
    return found


@pytest.mark.parametrize("make", [_relu_conv, _reshape_relu, lambda: _stem(True, 1),
                                  lambda: _stem(False, 2), _dense],
                         ids=["relu_conv", "reshape_relu", "stem_bias_s1", "stem_s2", "dense"])
def test_input_read_at_any_address(make):
    import tvm
    import tvm_ffi
    from tvm import relax

    model = make()
    mod, lowering, shape = _lowered(model)
    assert lowering.input_alignment == [4]
    assert _input_alignments(mod) and set(_input_alignments(mod)) == {4}
    vm = relax.VirtualMachine(tvm.compile(mod, targets.get("host").tvm_target(),
                                          relax_pipeline=None), tvm.cpu())
    x = RNG.standard_normal(shape).astype(np.float32)
    want = ort_run(model, {"x": x})[0]
    for offset in (4, 8, 20, 36, 60):
        placed = _placed(x, offset)
        tensor = tvm_ffi.from_dlpack(placed, require_alignment=4, require_contiguous=True)
        got = vm["main"](tensor).numpy()
        assert np.abs(got - want).max() <= 1e-4 * np.abs(want).max(), (offset, got, want)
    # running it again changes nothing
    again, report, alignment = unaligned_inputs(mod)
    assert again.same_as(mod) and alignment == [4] and report.rewrites == {"inputs": 1}


def test_input_that_is_also_an_output_keeps_64_bytes():
    """An input the model returns leaves main as the caller's own tensor: not this pass's."""
    graph = helper.make_graph(
        [helper.make_node("Relu", ["x"], ["y"]), helper.make_node("Identity", ["x"], ["z"])],
        "t", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 8, 4, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 8, 4, 4]),
         helper.make_tensor_value_info("z", TensorProto.FLOAT, [1, 8, 4, 4])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    mod, lowering, _ = _lowered(model)
    assert lowering.input_alignment == [64]
    _, report, _ = unaligned_inputs(mod)
    assert not report.changed and report.declined == ["x: held in a Tuple"]
    assert set(_input_alignments(mod)) <= {64}
    assert any("unaligned inputs" in line for line in lowering.graph)
