"""The `cpu` pipeline: channels-last layout and edgec's schedule rules, on tiny graphs built
with onnx.helper, against onnxruntime (ORT_DISABLE_ALL) within 1e-4 relative; every conv,
depthwise and dense kernel must be taken by a rule (none left to TVM's serial loops)."""

from __future__ import annotations

import dataclasses

import numpy as np
import onnx
import pytest
from onnx import helper, numpy_helper

from edgec import targets
from edgec.compiler import codegen
from edgec.compiler.codegen.cpu.tiles import (
    FMA_IN_FLIGHT,
    L1_WEIGHTS,
    L2_WEIGHTS,
    CpuShape,
    candidates,
    cpu_shape,
    k_block,
    tile,
)
from edgec.compiler.codegen.tir_level.stack_scratch import STACK_BYTES

from conftest import build_and_check, conv_kernels, random_const, tiny_model

# These tests are about the direct conv schedules (and what merges into them).
pytestmark = pytest.mark.usefixtures("direct_convs")

RNG = np.random.default_rng(0)


def _const(name: str, shape) -> onnx.TensorProto:
    return random_const(name, shape, RNG)


@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("k, groups, stride, dilation", [
    (3, 1, 1, 1), (3, 1, 2, 1), (1, 1, 1, 1), (3, 24, 1, 1), (3, 24, 2, 1), (3, 4, 1, 2),
    (5, 24, 1, 1)])
@pytest.mark.parametrize("act", ["Relu", "Clip", None])
def test_conv_epilogue(bias, k, groups, stride, dilation, act):
    cin, cout, hw = 24, 24 if groups > 1 else 40, 14
    inputs = ["x", "w"] + (["b"] if bias else [])
    pad = dilation * (k - 1) // 2
    nodes = [helper.make_node("Conv", inputs, ["c" if act else "y"], group=groups,
                              kernel_shape=[k, k], strides=[stride] * 2,
                              dilations=[dilation] * 2, pads=[pad] * 4)]
    inits = [_const("w", (cout, cin // groups, k, k))] + ([_const("b", (cout,))] if bias else [])
    if act == "Relu":
        nodes.append(helper.make_node("Relu", ["c"], ["y"]))
    elif act == "Clip":
        inits += [numpy_helper.from_array(np.float32(v), n) for n, v in (("lo", 0), ("hi", 6))]
        nodes.append(helper.make_node("Clip", ["c", "lo", "hi"], ["y"]))
    lowering = build_and_check(tiny_model(nodes, [1, cin, hw, hw], inits))
    convs = conv_kernels(lowering)
    assert len(convs) == 1 and set(convs.values()) == {"reduction_tile"}, lowering.kernels
    if act:  # the activation is fused into the conv's kernel, not a kernel of its own
        assert all("conv" in k or "transpose" in k for k in lowering.kernels), lowering.kernels


def test_residual_block_is_one_kernel_per_conv():
    nodes = [helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], pads=[1] * 4),
             helper.make_node("Relu", ["c1"], ["r1"]),
             helper.make_node("Conv", ["r1", "w2", "b2"], ["c2"], pads=[1] * 4),
             helper.make_node("Add", ["c2", "x"], ["s"]),
             helper.make_node("Relu", ["s"], ["y"])]
    inits = [_const("w1", (16, 16, 3, 3)), _const("b1", (16,)),
             _const("w2", (16, 16, 3, 3)), _const("b2", (16,))]
    lowering = build_and_check(tiny_model(nodes, [1, 16, 13, 13], inits))
    convs = conv_kernels(lowering)
    assert len(convs) == 2 and set(convs.values()) == {"reduction_tile"}, lowering.kernels
    # bias add, residual add and relu ride in the second conv's kernel
    assert any(k.count("add") >= 2 and "relu" in k for k in convs), lowering.kernels


def test_classifier_head_pool_and_dense():
    nodes = [helper.make_node("GlobalAveragePool", ["x"], ["p"]),
             helper.make_node("Flatten", ["p"], ["f"]),
             helper.make_node("Gemm", ["f", "w", "b"], ["y"], transB=1)]
    inits = [_const("w", (10, 32)), _const("b", (10,))]
    lowering = build_and_check(tiny_model(nodes, [1, 32, 7, 7], inits))
    assert "unscheduled" not in lowering.kernels.values(), lowering.kernels


def test_max_pool_and_concat():
    nodes = [helper.make_node("MaxPool", ["x"], ["a"], kernel_shape=[3, 3], strides=[2, 2],
                              pads=[1] * 4),
             helper.make_node("AveragePool", ["x"], ["b"], kernel_shape=[2, 2], strides=[2, 2]),
             helper.make_node("Concat", ["a", "b"], ["y"], axis=1)]
    lowering = build_and_check(tiny_model(nodes, [1, 8, 16, 16]))
    assert "unscheduled" not in lowering.kernels.values(), lowering.kernels


@pytest.mark.parametrize("k, groups", [(3, 1), (1, 1), (3, 128)])
def test_weights_repacked_at_compile_time(k, groups):
    """A 128-channel conv on a 7-wide map gets a tile narrower than its channels (the rule's
    register tile for this target): its weight constant reaches the kernel already packed
    [c // tile, kh, kw, c_in, tile], with no repacking left to run."""
    from tvm import tirx

    cin = 128 // groups
    nodes = [helper.make_node("Conv", ["x", "w", "b"], ["c"], group=groups, kernel_shape=[k, k],
                              pads=[k // 2] * 4),
             helper.make_node("Relu", ["c"], ["y"])]
    model = tiny_model(nodes, [1, 128, 7, 7],
                       [_const("w", (128, cin, k, k)), _const("b", (128,))])
    build_and_check(model)
    host = targets.get("host")
    lanes = cpu_shape(host.tvm_target()).lanes
    lowered = codegen.lower(model, host, {"x": [1, 128, 7, 7]})
    kernels = {gv.name_hint: f for gv, f in lowered.functions.items()
               if isinstance(f, tirx.PrimFunc)}
    conv = next(f for name, f in kernels.items() if "conv" in name)
    shapes = [[int(d) for d in p.shape] for p in conv.params]
    # the tile's channels: whichever walk the rule took (a 1x1 conv's map tile differs)
    packed = [s for s in shapes if len(s) == 5 and s[1:4] == [k, k, cin]]
    assert len(packed) == 1 and packed[0][0] * packed[0][4] == 128, shapes
    assert packed[0][4] < 128 and packed[0][4] % lanes == 0, shapes
    assert not any("layout_rewrite" in str(f) for f in kernels.values())


def test_dense_weights_repacked_at_compile_time():
    """A classifier's [k, 1000] weight reaches the dense kernel as [1000 // tile, k, tile], the
    tile being the rule's register tile: each tile streams one contiguous run of weights."""
    from tvm import tirx

    nodes = [helper.make_node("Gemm", ["x", "w", "b"], ["y"], transB=1)]
    model = tiny_model(nodes, [1, 96], [_const("w", (1000, 96)), _const("b", (1000,))])
    lowering = build_and_check(model)
    assert set(lowering.kernels.values()) == {"reduction_tile"}, lowering.kernels
    host = targets.get("host")
    _, v, u = tile(1, 1000, cpu_shape(host.tvm_target()), reduction=96)
    lowered = codegen.lower(model, host, {"x": [1, 96]})
    dense = next(f for gv, f in lowered.functions.items()
                 if isinstance(f, tirx.PrimFunc) and "matmul" in gv.name_hint)
    shapes = [[int(d) for d in p.shape] for p in dense.params]
    assert [1000 // (u * v), 96, u * v] in shapes, shapes


@pytest.mark.parametrize("triple, cpu, mattr, lanes, regs, live, dot, switches", [
    ("x86_64-linux-gnu", "znver4", [], 16, 24, 0, "vpdpbusd", "pc"),  # AVX-512: 32 zmm, VNNI
    ("x86_64-linux-gnu", "skylake-avx512", [], 16, 24, 0, "", "pc"),  # no VNNI
    ("x86_64-linux-gnu", "icelake-server", [], 16, 24, 0, "vpdpbusd", "pc"),
    ("x86_64-linux-gnu", "znver3", [], 8, 12, 16, "", "p"),  # AVX2 only: broadcasts in ymm
    ("x86_64-linux-gnu", "haswell", [], 8, 12, 16, "", "p"),
    ("x86_64-linux-gnu", "x86-64", [], 4, 12, 16, "", "p"),  # SSE2 baseline
    ("aarch64-linux-gnu", "cortex-a53", ["+neon"], 4, 24, 0, "", ""),  # NEON: 32 q registers
    ("aarch64-linux-gnu", "cortex-a72", ["+neon"], 4, 24, 0, "", "pc"),  # chosen with the proxy
    ("aarch64-linux-gnu", "cortex-a76", ["+neon", "+dotprod"], 4, 24, 0, "sdot", "pc"),
])
def test_cpu_shape_follows_the_target_features(triple, cpu, mattr, lanes, regs, live, dot,
                                               switches):
    """SIMD width comes from the target's features: TVM's llvm_get_vector_width answers 512
    for every x86-64 CPU, and AVX-512-sized tiles spilled on an AVX2 machine. `switches`:
    p(ointwise), c(olumns)."""
    from tvm.target import Target

    tgt = Target({"kind": "llvm", "mtriple": triple, "mcpu": cpu,
                  **({"mattr": mattr} if mattr else {})})
    x86 = triple.startswith("x86_64")
    shape = cpu_shape(tgt)
    if not x86:  # the Cortex cores' latencies and caches: test_cpu_shape.py
        shape = dataclasses.replace(shape, in_flight=FMA_IN_FLIGHT, l1_weights=L1_WEIGHTS,
                                    l2_weights=L2_WEIGHTS)
    assert shape == CpuShape(lanes=lanes, registers=regs, live=live, pointwise="p" in switches,
                             columns="c" in switches, int8_dot=dot,
                             int8_activation="uint8" if x86 else "int8")


@pytest.mark.parametrize("lanes, regs", [(16, 24), (8, 12), (4, 24)])
@pytest.mark.parametrize("width, channels", [(112, 32), (56, 144), (7, 960), (13, 1000),
                                             (1, 1000), (14, 24), (5, 3)])
def test_tile_divides_and_fits(lanes, regs, width, channels):
    wi, v, u = tile(width, channels, CpuShape(lanes=lanes, registers=regs))
    assert width % wi == 0 and channels % (v * u) == 0
    assert wi * u <= regs and wi * u * v * 4 <= STACK_BYTES  # registers; tir_level/stack_scratch.py
    if channels % 4 == 0:
        assert v >= 4  # vectorized whenever the channels allow it


@pytest.mark.parametrize("lanes, regs", [(16, 24), (4, 24)])
def test_tile_keeps_wide_weights_in_l1(lanes, regs):
    """MobileNetV2's 7x7 160->960 conv: the tile must not take so many channels that its
    weights spill from L1 (the plain most-accumulators tile was 1 column x 240 channels)."""
    cpu = CpuShape(lanes=lanes, registers=regs)
    wi, v, u = tile(7, 960, cpu, reduction=160)
    assert u * v * 160 * 4 <= L1_WEIGHTS and wi * u >= 8, (wi, v, u)
    # depthwise/pooling (no reduction given): the most accumulators, L1 not considered
    wi, v, u = tile(7, 960, cpu)
    assert wi * u == max(w * uu for w, uu in candidates(7, 960, cpu)[1] if 7 % w == 0)


@pytest.mark.parametrize("width, channels, want", [
    (112, 32, (4, 2)), (56, 144, (4, 2)), (28, 192, (4, 2)),  # 4 x 2 wherever it divides
    (14, 384, (2, 4)), (14, 48, (7, 1)), (7, 960, (7, 1)),  # else the next by depthwise_cost
])
def test_depthwise_tile_on_avx2(width, channels, want):
    """AVX2 (16 registers): a depthwise tile keeps at most 8 accumulators (more spilled in
    MobileNetV2's depthwise loops) and is ranked by depthwise_cost, not by accumulators."""
    wi, v, u = tile(width, channels, AVX2)
    assert (wi, u) == want and wi * u <= FMA_IN_FLIGHT
    assert width % wi == 0 and channels % (u * v) == 0


def test_tvm_default_pipeline_still_selectable(tmp_path):
    """The baseline the benchmarks compare against: TVM's pipeline, no edgec schedules."""
    import dataclasses

    nodes = [helper.make_node("Conv", ["x", "w"], ["y"], pads=[1] * 4)]
    model = tiny_model(nodes, [1, 8, 8, 8], [_const("w", (8, 8, 3, 3))])
    tgt = dataclasses.replace(targets.get("host"), pipeline="tvm-default")
    lowering = codegen.Lowering()
    codegen.build(model, tgt, {"x": [1, 8, 8, 8]}, lowering)
    assert lowering.kernels == {}


@pytest.mark.parametrize("hw, cin, cout", [(7, 960, 160), (14, 576, 96)])
def test_long_1x1_conv_blocks_its_reduction(monkeypatch, hw, cin, cout):
    """On a register file of 12 accumulators without AVX2's live limit a 1x1 conv's tile
    weights outgrow L1: the reduction is split in L1-sized blocks (_k_block), and the blocked
    kernel still matches onnxruntime. (On AVX2 such a conv walks the map unblocked:
    test_pixel_walks_match_onnxruntime.)"""
    from edgec.compiler.codegen.cpu import schedules as cpu_schedules

    avx2 = CpuShape(lanes=8, registers=12)
    _, v, u = tile(hw, cout, avx2, reduction=cin)
    kb = k_block(cin, u * v, cin)
    assert cin % kb == 0 and 16 <= kb < cin and kb * u * v * 4 <= L1_WEIGHTS, (kb, u, v)
    assert k_block(cin // 9, u * v, cin) == 0  # a 3x3 conv: not blocked
    assert k_block(cin, 8, 16) == 0  # weights already in L1: not blocked
    monkeypatch.setattr(cpu_schedules, "cpu_shape", lambda _target: avx2)
    nodes = [helper.make_node("Conv", ["x", "w", "b"], ["c"]),
             helper.make_node("Relu", ["c"], ["y"])]
    model = tiny_model(nodes, [1, cin, hw, hw],
                       [_const("w", (cout, cin, 1, 1)), _const("b", (cout,))])
    kernels = build_and_check(model).kernels
    assert [k for k, how in kernels.items() if how == "reduction_tile"] == \
        ["transpose_fused_conv2d_add_relu1"], kernels


AVX2 = CpuShape(lanes=8, registers=12, live=16, pointwise=True)


@pytest.mark.parametrize("width, channels, reduction", [
    (7, 512, 4608), (13, 256, 576), (13, 1000, 512), (55, 64, 144), (56, 64, 576), (1, 1000, 96)])
def test_avx2_broadcast_tiles_stay_in_sixteen_registers(width, channels, reduction):
    """AVX2 keeps a tile's broadcast inputs and weight vectors in registers beside its
    accumulators; past 16 LLVM spilled an accumulator in the inner loop (8 x 1: 70 GFLOP/s)."""
    for tails in (False, True):
        wi, _, u = tile(width, channels, AVX2, reduction=reduction, tails=tails)
        assert wi * u + wi + u <= 16, (wi, u)
    assert tile(56, 64, AVX2, reduction=576)[0::2] == (4, 2)  # not 8 x 1, which spilled


@pytest.mark.parametrize("width, channels, reduction", [(13, 256, 576), (13, 1000, 512),
                                                         (55, 64, 144), (27, 128, 288)])
def test_row_tail_only_where_no_dividing_tile_hides_the_fma_latency(width, channels, reduction):
    dividing = tile(width, channels, AVX2, reduction=reduction)
    assert width % dividing[0] == 0 and dividing[0] * dividing[2] < 8
    wi, _, u = tile(width, channels, AVX2, reduction=reduction, tails=True)
    assert width % wi and wi * u >= 7, (wi, u)
    # enough accumulators in a dividing tile: no tail (ResNet-18's 7-wide 3x3 convs keep 7 x 1)
    assert tile(7, 512, AVX2, reduction=4608, tails=True)[0::2] == (7, 1)
    assert tile(14, 256, AVX2, reduction=2304, tails=True)[0] in (1, 2, 7, 14)
    # over the 49 pixels of a 7x7 map a tail pays; 4 x 2 keeps its weights (295 KiB) in L2
    # where 2 x 4 (busier by a tail of 1 x 4, not 1 x 2) would stream 590 KiB per tile
    assert tile(49, 512, AVX2, reduction=4608, tails=True)[0::2] == (4, 2)
    # AVX-512's 24 accumulators: a dividing tile always reaches 8 here, so nothing changes
    avx512 = CpuShape(lanes=16, registers=24)
    assert tile(width, channels, avx512, reduction=reduction, tails=True) == \
        tile(width, channels, avx512, reduction=reduction)


@pytest.mark.parametrize("width, channels, reduction, wi_u", [
    (49, 320, 960, (6, 2)), (169, 1000, 512, (2, 5)), (196, 96, 576, (4, 3)),
    (27, 32, 128, (6, 2)), (112, 16, 96, (6, 2))])
def test_pointwise_tiles_by_loads_per_fma(width, channels, reduction, wi_u):
    """A 1x1 conv's AVX2 tile: the fewest loads per FMA among tiles of 8 or more accumulators,
    a tail allowed, its weights in L1 or not; LLVM keeps one broadcast input live, so up to 12
    accumulators fit (6 x 2: 12 + 2 weight vectors + 1). Not for k x k convs or other CPUs."""
    wi, v, u = tile(width, channels, AVX2, reduction=reduction, tails=True, pointwise=True)
    assert (wi, u) == wi_u and wi * u + u + 1 <= 16
    assert tile(width, channels, AVX2, reduction=reduction, tails=True) != (wi, v, u)
    # one vector per tile (232 channels: 29 vectors) keeps the k x k limit: 8 x 1 spilled
    assert tile(49, 232, AVX2, reduction=232, tails=True, pointwise=True)[0::2] == (7, 1)
    neon = CpuShape(lanes=4, registers=24)  # not measured there: most accumulators
    assert tile(width, channels, neon, reduction=reduction, tails=True, pointwise=True) == \
        tile(width, channels, neon, reduction=reduction, tails=True)


AVX512 = CpuShape(lanes=16, registers=24, pointwise=True)


@pytest.mark.parametrize("width, channels, reduction, wi_u", [
    (49, 160, 960, (11, 2)), (196, 64, 192, (6, 4)), (49, 1280, 320, (6, 4)),
    (196, 96, 576, (8, 3)), (49, 96, 160, (7, 3))])
def test_avx512_pointwise_tiles_stream_few_weights(width, channels, reduction, wi_u):
    """AVX-512 (32 zmm, 16 lanes): a 1x1 conv's tile weighs a streamed weight vector (64
    bytes) as two broadcasts, among tiles of up to 24 accumulators (their 1-1.5 KiB of
    scratch on the stack: tir_level/stack_scratch.py). Never the broadcast-bound 14 x 1 that the
    most-accumulators rule gave MobileNetV2's 14x14 576 -> 96 conv (1.5x slower than 4 x 3);
    with the weights counted as streamed, the k x k rule no longer gives it either. The
    loads are the row's, its tail's included: on a 7x7 map 7 x 3 (no tail) loads as much as
    8 x 3 with a 1 x 3 tail, and keeps more FMA slots busy."""
    wi, v, u = tile(width, channels, AVX512, reduction=reduction, tails=True, pointwise=True)
    assert (wi, u) == wi_u and v == 16 and wi * u * v * 4 <= STACK_BYTES
    assert tile(14, 96, AVX512, reduction=576, tails=True)[0::2] != (14, 1)


@pytest.mark.parametrize("width, channels, want", [
    (7, 96, (7, 1)), (14, 384, (14, 1)), (56, 144, (14, 1)), (28, 192, (14, 1))])
def test_avx512_depthwise_tile_takes_columns(width, channels, want):
    """AVX-512 (`columns`): a depthwise tile is the most output columns of one vector, not the
    most accumulators (7 x 3 on a 7-wide map, 2 x 12 on a 14-wide one); other CPUs keep
    theirs (NEON: most accumulators, unmeasured there)."""
    wi, v, u = tile(width, channels, CpuShape(lanes=16, registers=24, pointwise=True,
                                              columns=True))
    assert (wi, u) == want and v == 16 and width % wi == 0
    assert tile(width, channels, AVX512) != (wi, v, u)
    neon = CpuShape(lanes=4, registers=24)
    wi, _, u = tile(width, channels, neon)
    assert wi * u == max(w * uu for w, uu in candidates(width, channels, neon)[1]
                         if width % w == 0)


@pytest.mark.parametrize("hw, cin, cout, residual", [(7, 960, 160, True), (14, 576, 96, False),
                                                      (14, 192, 64, True)])
def test_avx512_pointwise_convs_match_onnxruntime(monkeypatch, hw, cin, cout, residual):
    """The AVX-512 shape's 1x1 tiles (11 x 2 over a 7x7 map with a 5 x 2 tail, 8 x 3 and 6 x 4
    over 196 pixels with 4 x 3 and 4 x 4 tails: 1.5 KiB of scratch, on the stack): exact on
    any x86 host (16-lane vectors are legal LLVM IR everywhere)."""
    from edgec.compiler.codegen.cpu import schedules as cpu_schedules

    monkeypatch.setattr(cpu_schedules, "cpu_shape", lambda _target: AVX512)
    nodes = [helper.make_node("Conv", ["x", "w", "b"], ["c"])]
    inits = [_const("w", (cout, cin, 1, 1)), _const("b", (cout,))]
    if residual:
        nodes.append(helper.make_node("Add", ["c", "r"], ["y"]))
        inits.append(_const("r", (1, cout, hw, hw)))
    else:
        nodes.append(helper.make_node("Relu", ["c"], ["y"]))
    kernels = build_and_check(tiny_model(nodes, [1, cin, hw, hw], inits)).kernels
    assert [how for name, how in kernels.items() if "conv2d" in name] == ["reduction_tile"]


@pytest.mark.parametrize("hw, cin, cout, k, stride, residual, walk", [
    (27, 8, 32, 3, 1, True, "rows, a tail each"),  # one channel tile: rows stay parallel
    (13, 32, 40, 1, 1, False, "rows, a tail each"),
    (13, 64, 256, 3, 1, True, "map, one tail"),  # SqueezeNet: the tail once, not per row
    (25, 16, 64, 3, 2, False, "rows, a tail each"),  # two channel tiles: too few for a map
    (7, 256, 256, 3, 1, True, "map, one tail"),  # ResNet's 7x7: 2 x 4 and 1 x 4, not 7 x 1
    (14, 128, 256, 3, 2, False, "map, one tail"),
    (14, 128, 128, 3, 1, False, "map"),  # 4 x 2 divides 196 pixels, not a 14-wide row
    (56, 16, 16, 3, 1, True, "rows"),  # 4 x 2 divides the row: nothing to gain
    # 1x1 convs, tiles by loads per FMA: 6 x 2 and a 1 x 2 tail over 49 pixels, unblocked;
    # 4 x 3 divides 196; a short reduction (32) keeps the k x k rule's 4 x 2 rows
    (7, 960, 320, 1, 1, True, "map, one tail"),
    (14, 576, 96, 1, 1, False, "map"),
    (28, 32, 16, 1, 1, False, "rows"),
])
def test_pixel_walks_match_onnxruntime(monkeypatch, hw, cin, cout, k, stride, residual, walk):
    """Convs whose AVX2 tile does not divide a row (SqueezeNet's 13-, 27-, 55-wide maps,
    ResNet's 7 and 14): whole tiles then one tail per row, or the map walked as one pixel loop
    with or without a tail. Every copy of the loop nest and the epilogue (bias, ReLU, a
    residual add) are exact."""
    from edgec.compiler.codegen.cpu import schedules as cpu_schedules

    monkeypatch.setattr(cpu_schedules, "cpu_shape", lambda _target: AVX2)
    taken = []

    def spy(name, real):
        def wrapped(*args, **kwargs):
            result = real(*args, **kwargs)
            taken.append(name if name == "tail" or result else "")
            return result
        monkeypatch.setattr(cpu_schedules, real.__name__, wrapped)

    spy("map", cpu_schedules.whole_map)
    spy("tail", cpu_schedules.row_with_tail)
    out = (hw + 2 * (k // 2) - k) // stride + 1
    nodes = [helper.make_node("Conv", ["x", "w", "b"], ["c"], kernel_shape=[k, k],
                              strides=[stride] * 2, pads=[k // 2] * 4)]
    inits = [_const("w", (cout, cin, k, k)), _const("b", (cout,))]
    if residual:
        nodes.append(helper.make_node("Add", ["c", "r"], ["c2"]))
        inits.append(_const("r", (1, cout, out, out)))
    nodes.append(helper.make_node("Relu", ["c2" if residual else "c"], ["y"]))
    kernels = build_and_check(tiny_model(nodes, [1, cin, hw, hw], inits)).kernels
    assert [how for name, how in kernels.items() if "conv2d" in name] == ["reduction_tile"], \
        kernels
    taken = set(taken) - {""}  # the rule may run more than once on a kernel
    assert {"rows": set(), "rows, a tail each": {"tail"}, "map": {"map"},
            "map, one tail": {"map", "tail"}}[walk] == taken


@pytest.mark.parametrize("cin, copied", [(3, False), (8, True)])
def test_conv_padding_copied_once_for_long_reductions(cin, copied):
    """A 3x3 conv over 8 channels (reduction 72) reads a padded copy made once per call; an RGB
    stem's (27) keeps its bounds checks in the inner loop, where the copy cost more."""
    from tvm import tirx

    nodes = [helper.make_node("Conv", ["x", "w"], ["y"], pads=[1] * 4)]
    model = tiny_model(nodes, [1, cin, 16, 16], [_const("w", (32, cin, 3, 3))])
    assert build_and_check(model).kernels["transpose_conv2d1"] == "reduction_tile"
    lowered = codegen.lower(model, targets.get("host"), {"x": [1, cin, 16, 16]})
    conv = next(f for gv, f in lowered.functions.items() if isinstance(f, tirx.PrimFunc)
                and "conv2d" in gv.name_hint and "weight_prepack" not in gv.name_hint)
    assert ('sblock("pad_temp")' in conv.script()) == copied
