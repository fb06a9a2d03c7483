"""Int8 codegen: QDQ convs as integer arithmetic (relax_level/int8.py, cpu/int8.py).

Reference: onnxruntime on the same QDQ model (ORT_DISABLE_ALL: the fake-quantized graph, each
QuantizeLinear rounding as ONNX says). Tolerances:
- a model whose output is a DequantizeLinear: max|diff| <= 1 step of the final quantize's
  scale (int8 sums are exact; a product rounded differently in fp32 may tip one value of an
  intermediate quantize by a step, which the layers after it may carry to the output);
- a model whose output is a conv's fp32 result: max|diff| <= 1e-5 * sum_k |x_k w_k| (the int32
  sum is exact, onnxruntime's fp32 sum of the same products rounds at that scale).
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from edgec import targets
from edgec.compiler import codegen
from edgec.compiler.codegen.cpu.tiles import cpu_shape
from edgec.compiler.codegen.relax_level.int8 import Int8Options, int8
from edgec.compiler.codegen.relax_level.qdq_elementwise import qdq_elementwise

from conftest import ort_run, random_const, save, tiny_model

X_SHAPE = [1, 3, 16, 16]


def _calibration(shape: list[int], n: int = 4):
    from onnxruntime.quantization import CalibrationDataReader

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            rng = np.random.default_rng(7)
            self.feeds = iter([{"x": rng.standard_normal(shape).astype(np.float32)}
                               for _ in range(n)])

        def get_next(self):
            return next(self.feeds, None)

    return Reader()


def small_cnn() -> onnx.ModelProto:
    """3x3/2 conv (3 -> 16 channels) + ReLU, depthwise 3x3 + ReLU, 1x1 (16 -> 32), residual
    add, global pool, Gemm head: what MobileNets and ResNets are made of."""
    rng = np.random.default_rng(0)
    inits = [random_const(n, s, rng) for n, s in (
        ("w1", (16, 3, 3, 3)), ("b1", (16,)), ("w2", (16, 1, 3, 3)), ("b2", (16,)),
        ("w3", (32, 16, 1, 1)), ("b3", (32,)), ("w4", (32, 32, 3, 3)), ("fw", (16, 32)),
        ("fb", (16,)))]
    nodes = [helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], pads=[1] * 4, strides=[2, 2]),
             helper.make_node("Relu", ["c1"], ["r1"]),
             helper.make_node("Conv", ["r1", "w2", "b2"], ["c2"], pads=[1] * 4, group=16),
             helper.make_node("Relu", ["c2"], ["r2"]),
             helper.make_node("Conv", ["r2", "w3", "b3"], ["c3"]),
             helper.make_node("Conv", ["c3", "w4"], ["c4"], pads=[1] * 4),
             helper.make_node("Add", ["c3", "c4"], ["a"]),
             helper.make_node("GlobalAveragePool", ["a"], ["p"]),
             helper.make_node("Flatten", ["p"], ["f"]),
             helper.make_node("Gemm", ["f", "fw", "fb"], ["y"], transB=1)]
    return tiny_model(nodes, X_SHAPE, inits, out_shape=[1, 16])


def quantize(model: onnx.ModelProto, folder: Path) -> Path:
    """`model` quantized by onnxruntime: QDQ, per channel, uint8 activations, int8 weights."""
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_static

    src, dst = save(model, folder / "fp32.onnx"), folder / "qdq.onnx"
    shape = [d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim]
    quantize_static(str(src), str(dst), _calibration(shape), quant_format=QuantFormat.QDQ,
                    per_channel=True, activation_type=QuantType.QUInt8,
                    weight_type=QuantType.QInt8)
    return dst


@pytest.fixture(scope="module")
def qdq_cnn(tmp_path_factory) -> Path:
    return quantize(small_cnn(), tmp_path_factory.mktemp("qdq"))


@pytest.fixture(scope="module")
def host_build(qdq_cnn):
    """(executable, lowering) of the quantized CNN for the host."""
    lowering = codegen.Lowering()
    ex = codegen.build(onnx.load(qdq_cnn), targets.get("host"), {"x": X_SHAPE}, lowering)
    return ex, lowering


def _output_step(path: Path) -> float:
    """The scale of the quantize whose dequantize is the model's output."""
    model = onnx.load(path)
    inits = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    last = next(n for n in model.graph.node if n.output[0] == model.graph.output[0].name)
    assert last.op_type == "DequantizeLinear"
    return float(inits[last.input[1]])


def _run_calls(ex, model_path: Path, shape: list[int], tol: float, calls: int = 3) -> float:
    """Call the executable `calls` times on seeded inputs; each output within `tol` of
    onnxruntime's, and no earlier output changed by a later call. Returns the largest diff."""
    import tvm
    from tvm import relax

    vm = relax.VirtualMachine(ex, tvm.cpu())
    kept, worst = [], 0.0
    for call in range(calls):
        x = np.random.default_rng(100 + call).standard_normal(shape).astype(np.float32)
        out = vm["main"](tvm.runtime.tensor(x))
        got, want = out.numpy().copy(), ort_run(model_path, {"x": x})[0]
        assert got.shape == want.shape
        worst = max(worst, float(np.abs(got - want).max()))
        assert np.abs(got - want).max() <= tol, (call, np.abs(got - want).max(), tol)
        kept.append((out, got))
    for call, (out, got) in enumerate(kept):
        assert np.array_equal(out.numpy(), got), f"call {call + 1}'s output changed later"
    return worst


def test_quantized_cnn_matches_onnxruntime_within_one_step(host_build, qdq_cnn):
    ex, lowering = host_build
    assert "int8: conv 3, depthwise conv 1, matmul 1" in lowering.graph[0], lowering.graph
    assert lowering.graph[1].startswith("qdq elementwise: dequantize as elementwise"), \
        lowering.graph
    step = _output_step(qdq_cnn)
    _run_calls(ex, qdq_cnn, X_SHAPE, tol=1.0 * step + 1e-6)


def test_int8_rule_takes_every_int8_conv_and_dense(host_build):
    _, lowering = host_build
    convs = {k: v for k, v in lowering.kernels.items() if "conv2d" in k or "matmul" in k}
    assert len(convs) == 5 and set(convs.values()) == {"int8"}, convs
    assert "unscheduled" not in lowering.kernels.values(), lowering.kernels
    # the 3x3 32 -> 32 conv on 16 2x2 tiles would be Winograd's in fp32; int8, it stays direct
    assert not any(line.startswith("winograd") for line in lowering.graph), lowering.graph
    assert "winograd" not in lowering.kernels.values()


def test_dot_product_takes_the_dense_convs_and_the_gemm(qdq_cnn):
    """The dot-product schedule (not the int32 fallback) takes all but the depthwise conv."""
    import tvm

    from edgec.compiler.codegen.cpu.int8 import dot_conv, int8_reduction
    from edgec.compiler.codegen.pipelines import fused

    target = targets.get("host")
    cpu = cpu_shape(target.tvm_target())
    if not cpu.int8_dot:
        pytest.skip("this CPU has no int8 dot product")
    with target.tvm_target():
        mod = fused(target.tvm_target())(
            codegen.import_model(onnx.load(qdq_cnn), target, {"x": X_SHAPE}))
    taken = {gv.name_hint: dot_conv(f, cpu) is not None for gv, f in mod.functions_items()
             if isinstance(f, tvm.tirx.PrimFunc) and int8_reduction(f)}
    assert sorted(taken.values()) == [False, True, True, True, True], taken


def _objdump(lib: Path, objdump: str) -> str:
    """The disassembly of `lib` by `objdump` (skips the test where it is not installed)."""
    if shutil.which(objdump) is None:
        pytest.skip(f"{objdump} is not installed")
    return subprocess.run([objdump, "-d", str(lib)], capture_output=True, text=True,
                          check=True).stdout


def _disassembly(ex, target_name: str, folder: Path, objdump: str) -> str:
    return _objdump(codegen.export(ex, folder / "model.so", targets.get(target_name)), objdump)


def test_host_build_uses_vpdpbusd(host_build, tmp_path):
    if cpu_shape(targets.get("host").tvm_target()).int8_dot != "vpdpbusd":
        pytest.skip("this CPU has no AVX-512 VNNI")
    code = _disassembly(host_build[0], "host", tmp_path, "objdump")
    assert code.count("vpdpbusd") >= 4  # 3 dense convs and the Gemm


def test_int8_epilogues_and_depthwise_are_vector_code(host_build, tmp_path):
    """The quantize's round half to even (nearbyint) is a vector op to TVM's vectorizer, so
    no epilogue loop is scalarized and rebuilt by LLVM with gathers; the depthwise conv reads
    a padded copy (contiguous vector loads, no bounds-checked gathers)."""
    import tvm

    import edgec.compiler.codegen.cpu.int8  # noqa: F401  (registers the op attribute)

    assert tvm.ir.Op.get("tirx.nearbyint").get_attr("TVectorizable")
    if cpu_shape(targets.get("host").tvm_target()).lanes < 16:
        pytest.skip("checked on AVX-512 code")
    code = _disassembly(host_build[0], "host", tmp_path, "objdump")
    assert "vrndscaleps" in code and "gather" not in code


def test_input_quantize_walks_the_width_in_vectors(qdq_cnn):
    """The model's input, quantized from NCHW planes into 4 NHWC channels (the first conv's
    pad and channel pad), is scheduled with the width in vectors innermost (loads from the
    planes contiguous), not one scalar pixel of 4 channels at a time (cpu/loops.py,
    planes_to_channels). Its values are checked by the whole-model test above."""
    import tvm

    from edgec.compiler.codegen.cpu.schedules import elementwise
    from edgec.compiler.codegen.pipelines import fused

    target = targets.get("host")
    cpu = cpu_shape(target.tvm_target())
    with target.tvm_target():
        mod = fused(target.tvm_target())(
            codegen.import_model(onnx.load(qdq_cnn), target, {"x": X_SHAPE}))
    inputs = [f for f in mod.functions.values() if isinstance(f, tvm.tirx.PrimFunc)
              and [int(d) for d in f.params[0].ty.shape] == X_SHAPE]
    assert len(inputs) == 1
    script = elementwise(inputs[0], cpu).mod["main"].script()
    assert f"T.vectorized(T.int64({cpu.lanes}))" in script and "T.unroll(T.int64(4))" in script


def test_rpi5_build_uses_sdot(qdq_cnn, tmp_path):
    lowering = codegen.Lowering()
    ex = codegen.build(onnx.load(qdq_cnn), targets.get("rpi5"), {"x": X_SHAPE}, lowering)
    assert {v for k, v in lowering.kernels.items() if "conv2d" in k} == {"int8"}
    code = _disassembly(ex, "rpi5", tmp_path, "aarch64-linux-gnu-objdump")
    assert "sdot" in code


C = 16  # channels of _qdq_conv: one vpdpbusd vector of output channels


def _qdq_conv(zx: int, groups: int, weights_input: bool = False, k: int = C) -> onnx.ModelProto:
    """x -> Q(0.05, zx) -> DQ -> conv 3x3 pad 1 (C -> k channels) with DQ(int8 per-channel
    weights), fp32 out."""
    rng = np.random.default_rng(3)
    c = C
    wq = rng.integers(-127, 128, size=(k, c // groups, 3, 3)).astype(np.int8)
    inits = {"xs": np.float32(0.05), "xz": np.uint8(zx), "ws": rng.uniform(0.01, 0.03, k)
             .astype(np.float32), "wz": np.zeros(k, np.int8), "b": rng.standard_normal(k)
             .astype(np.float32)}
    nodes = [helper.make_node("QuantizeLinear", ["x", "xs", "xz"], ["xq"]),
             helper.make_node("DequantizeLinear", ["xq", "xs", "xz"], ["xd"]),
             helper.make_node("DequantizeLinear", ["wq", "ws", "wz"], ["wd"], axis=0),
             helper.make_node("Conv", ["xd", "wd", "b"], ["y"], pads=[1] * 4, group=groups)]
    wq_info = helper.make_tensor_value_info("wq", TensorProto.INT8, list(wq.shape))
    if not weights_input:
        inits["wq"] = wq
    model = tiny_model(nodes, [1, c, 8, 8], inits, out_shape=[1, k, 8, 8], infer=False)
    if weights_input:
        model.graph.input.append(wq_info)
    return model


def _conv_bound(zx: int, groups: int) -> float:
    """1e-5 x sum_k |x_k w_k| <= max|x| (steps of 0.05 from zx) x max|w| (127 x 0.03) x 9 taps
    x input channels per group."""
    return 1e-5 * max(zx, 255 - zx) * 0.05 * 127 * 0.03 * 9 * (C // groups)


@pytest.mark.parametrize("groups", [1, C])
@pytest.mark.parametrize("activation", ["uint8", "int8"])
def test_zero_point_padding_and_shift_are_exact(tmp_path, groups, activation):
    """A zero point of 200 pads the border with 200 (dequantized: 0); int8 activations take
    the u8 -> s8 shift. Built with TVM's default pipeline after the rewrite alone."""
    import tvm
    from tvm import relax

    model = _qdq_conv(200, groups)
    path = save(model, tmp_path / "m.onnx")
    mod = codegen.to_relax(model, {"x": [1, C, 8, 8]})
    mod, report = int8(mod, Int8Options(activation=activation))
    assert report.rewrites == {("conv" if groups == 1 else "depthwise conv"): 1}
    target = targets.get("host").tvm_target()
    ex = tvm.compile(mod, target, relax_pipeline=relax.get_default_pipeline(target))
    _run_calls(ex, path, [1, C, 8, 8], tol=_conv_bound(200, groups), calls=2)


@pytest.mark.parametrize("zx, k", [(0, C), (200, C), (200, 24)])
def test_padded_dense_conv_takes_the_dot_product(tmp_path, zx, k):
    """Zero point 0: the conv pads itself, the rule copies the padded input once; 200: an
    explicit pad with 200. Both on vpdpbusd, both within fp32 rounding of onnxruntime. 24
    output channels (MobileNetV2's) take its 256-bit form, 8 lanes."""
    if cpu_shape(targets.get("host").tvm_target()).int8_dot != "vpdpbusd":
        pytest.skip("this CPU has no AVX-512 VNNI")
    model = _qdq_conv(zx, 1, k=k)
    path = save(model, tmp_path / "m.onnx")
    lowering = codegen.Lowering()
    ex = codegen.build(model, targets.get("host"), {"x": [1, C, 8, 8]}, lowering)
    assert {v for name, v in lowering.kernels.items() if "conv2d" in name} == {"int8"}
    _run_calls(ex, path, [1, C, 8, 8], tol=_conv_bound(zx, 1), calls=2)
    code = _disassembly(ex, "host", tmp_path, "objdump")
    dots = [line for line in code.splitlines() if "vpdpbusd" in line]
    assert dots and all(("%ymm" in line) == (k % 16 != 0) for line in dots), dots[:4]


def test_rewrite_declines_runtime_weights():
    model = _qdq_conv(10, 1, weights_input=True)
    mod = codegen.to_relax(model, {"x": [1, C, 8, 8], "wq": [C, C, 3, 3]})
    _, report = int8(mod)
    assert "conv" not in report.rewrites and f"conv 1x{C}x8x8 groups 1: weights not constant" \
        in report.declined, report.declined


def test_fp32_model_unchanged_and_rewrite_idempotent(qdq_cnn):
    import tvm

    rng = np.random.default_rng(1)
    fp32 = tiny_model([helper.make_node("Conv", ["x", "w"], ["y"], pads=[1] * 4)],
                      [1, 4, 8, 8], [random_const("w", (8, 4, 3, 3), rng)])
    mod = codegen.to_relax(fp32, {"x": [1, 4, 8, 8]})
    out, report = int8(mod)
    assert not report.changed and not report.declined
    tvm.ir.assert_structural_equal(out, mod)

    out, report = qdq_elementwise(mod)
    assert not report.changed and not report.declined
    tvm.ir.assert_structural_equal(out, mod)

    qdq = codegen.to_relax(onnx.load(qdq_cnn), {"x": X_SHAPE})
    once, first = qdq_elementwise(int8(qdq)[0])
    assert first.changed
    twice, second = qdq_elementwise(int8(once)[0])
    assert not second.changed and not second.declined, second.summary()
    tvm.ir.assert_structural_equal(twice, once)


def test_requantize_is_one_multiply_add(qdq_cnn):
    """Each quantize of an int8 conv's or matmul's result rounds a * (c1 / s) + c2 / s (the
    conv's scale and bias folded with the quantize's 1 / s; a * (c1 / s) without a bias),
    no separate multiply; the model input's quantize rounds x * (1 / s)."""
    from tvm import relax

    from edgec.compiler.codegen.relax_level.rewrite import op_name

    mod, _ = qdq_elementwise(int8(codegen.to_relax(onnx.load(qdq_cnn), {"x": X_SHAPE}))[0])
    bindings = {b.var: b.value for block in mod["main"].body.blocks for b in block.bindings}
    rounded = [bindings[v.args[0]] for v in bindings.values() if op_name(v) == "relax.round"]
    kinds = [op_name(x) + ("(" + op_name(bindings[x.args[0]]) + ")"
             if isinstance(x.args[0], relax.Var) and x.args[0] in bindings else "")
             for x in rounded]
    # the convs with a bias and the Gemm; the conv without one; the input
    assert kinds.count("relax.add(relax.multiply)") == 4, kinds
    assert kinds.count("relax.multiply(relax.astype)") == 1, kinds
    assert kinds[0] == "relax.multiply", kinds


@pytest.mark.skipif(shutil.which("qemu-aarch64") is None, reason="qemu-user is not installed")
def test_rpi5_bundle_matches_onnxruntime_under_qemu(qdq_cnn, tmp_path):
    import edgec

    out = tmp_path / "rpi5"
    edgec.compile(qdq_cnn, output=out, target="rpi5", bundle=True, latency=False)
    _matches_under_qemu(out, qdq_cnn)


def _matches_under_qemu(bundle: Path, qdq: Path) -> None:
    """`bundle` under qemu within one output step of onnxruntime on `qdq`, two inputs."""
    from edgec.runtime.device import run_bundle

    step = _output_step(qdq)
    for seed in (11, 12):
        x = np.random.default_rng(seed).standard_normal(X_SHAPE).astype(np.float32)
        result = run_bundle(bundle, device="qemu", feed={"x": x})
        want = ort_run(qdq, {"x": x})[0]
        assert result.emulated
        assert np.abs(next(iter(result.outputs.values())) - want).max() <= step + 1e-6


NEON_INT8_MAC = ("smlal", "smlal2", "sadalp")  # widening int16 -> int32 multiply-accumulates


@pytest.mark.skipif(shutil.which("qemu-aarch64") is None, reason="qemu-user is not installed")
def test_rpi4_bundle_uses_neon_int8_and_matches_onnxruntime_under_qemu(qdq_cnn, tmp_path):
    """Cortex-A72 has no dot product: the int8 convs take the int32-lane tile, whose widening
    multiply-accumulates are NEON's; the bundle runs under qemu as a Cortex-A72 (the target's
    emulator names that CPU, so an sdot would fault)."""
    import edgec

    target = targets.get("rpi4")
    assert list(target.emulator[1:3]) == ["-cpu", "cortex-a72"], target.emulator
    assert not cpu_shape(target.tvm_target()).int8_dot
    out = tmp_path / "rpi4"
    edgec.compile(qdq_cnn, output=out, target="rpi4", bundle=True, latency=False)
    code = _objdump(out / "model.so", "aarch64-linux-gnu-objdump")
    mnemonics = [line.split("\t")[2].split()[0] for line in code.splitlines()
                 if line.count("\t") >= 2 and line.split("\t")[2].strip()]
    assert any(m in NEON_INT8_MAC for m in mnemonics), sorted(set(mnemonics))
    assert "sdot" not in mnemonics and "udot" not in mnemonics
    _matches_under_qemu(out, qdq_cnn)
