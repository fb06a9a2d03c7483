"""merge_chains + cpu/chains: a conv and the depthwise conv reading its output become one
kernel, scheduled one channel chunk at a time; tiny graphs from onnx.helper, outputs against
onnxruntime (ORT_DISABLE_ALL) within 1e-4 relative."""

from __future__ import annotations

import numpy as np
import pytest
from onnx import helper, numpy_helper

from edgec import targets
from edgec.compiler import codegen
from edgec.compiler.codegen.cpu.chains import MIN_CHUNKS, band_rows, chunk_channels, plan
from edgec.compiler.codegen.cpu.tiles import CpuShape, Knobs
from edgec.compiler.codegen.relax_level.merge_chains import merge_conv_depthwise

from conftest import (
    build_and_check,
    conv_kernels,
    kernel_names,
    legalized,
    random_const,
    tiny_model,
)

# These tests are about the direct conv schedules (and what merges into them).
pytestmark = pytest.mark.usefixtures("direct_convs")

RNG = np.random.default_rng(0)
CLIP = [numpy_helper.from_array(np.float32(v), n) for n, v in (("lo", 0), ("hi", 6))]


def _expand_depthwise(cin=16, mid=64, k_a=1, k_b=3, stride=1, dilation=1, bias=True,
                      act="Clip", dw_pad=True, extra=(), hw=28, dw_pads=None):
    """x -> conv(k_a) -> act -> depthwise(k_b) -> act -> y, plus `extra` nodes reading "a"."""
    def bias_of(name, n):
        return [name] if bias else [], [random_const(name, (n,), RNG)] if bias else []

    b1, i1 = bias_of("b1", mid)
    b2, i2 = bias_of("b2", mid)
    pad_b = dilation * (k_b - 1) // 2 if dw_pad else 0
    nodes = [helper.make_node("Conv", ["x", "w1", *b1], ["c1"], kernel_shape=[k_a] * 2,
                              pads=[(k_a - 1) // 2] * 4),
             helper.make_node("Conv", ["a", "w2", *b2], ["c2"], group=mid,
                              kernel_shape=[k_b] * 2, strides=[stride] * 2,
                              dilations=[dilation] * 2, pads=dw_pads or [pad_b] * 4)]
    if act == "Clip":
        nodes[1:1] = [helper.make_node("Clip", ["c1", "lo", "hi"], ["a"])]
        nodes.append(helper.make_node("Clip", ["c2", "lo", "hi"], ["y" if not extra else "d"]))
    else:
        nodes[1:1] = [helper.make_node("Relu", ["c1"], ["a"])]
        nodes.append(helper.make_node("Relu", ["c2"], ["y" if not extra else "d"]))
    nodes += list(extra)
    inits = [random_const("w1", (mid, cin, k_a, k_a), RNG), *i1,
             random_const("w2", (mid, 1, k_b, k_b), RNG), *i2] + (CLIP if act == "Clip" else [])
    return tiny_model(nodes, [1, cin, hw, hw], inits)


@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("k_a, k_b, stride, dilation", [
    (1, 3, 1, 1), (1, 3, 2, 1), (1, 5, 1, 1), (3, 3, 1, 1), (1, 3, 1, 2), (1, 5, 2, 1)])
@pytest.mark.parametrize("act", ["Clip", "Relu"])
def test_conv_depthwise_is_one_kernel(bias, k_a, k_b, stride, dilation, act):
    lowering = build_and_check(_expand_depthwise(k_a=k_a, k_b=k_b, stride=stride,
                                                 dilation=dilation, bias=bias, act=act))
    convs = conv_kernels(lowering)
    assert list(convs.values()) == ["conv_depthwise"], lowering.kernels


@pytest.mark.parametrize("hw, cin, mid, stride, walk", [
    (7, 64, 384, 1, "map, one tail"),  # 48-channel chunks: 4 x 3 over 49 pixels, a 1 x 3 tail
    (14, 64, 192, 1, "map"),  # 24-channel chunks: 4 x 3 divides 196
    (14, 96, 576, 2, "map"),  # the depthwise conv's stride reads the map by rows
    (28, 16, 128, 1, "rows"),  # a short reduction keeps the k x k rule's rows
])
def test_chain_conv_walks_the_map(monkeypatch, hw, cin, mid, stride, walk):
    """On AVX2 a chain's 1x1 conv takes reduction_tile's 1x1 rule inside each chunk: tiles by
    loads per FMA over the chunk's whole map, a tail where they do not divide it; the
    depthwise conv still reads the chunk by rows. Outputs match onnxruntime."""
    from edgec.compiler.codegen.cpu import chains as cpu_chains
    from edgec.compiler.codegen.cpu import schedules as cpu_schedules

    monkeypatch.setattr(cpu_schedules, "cpu_shape",
                        lambda _target: CpuShape(lanes=8, registers=12, live=16, pointwise=True))
    taken = set()

    def spy(name, real):
        def wrapped(*args, **kwargs):
            taken.add(name)
            return real(*args, **kwargs)
        monkeypatch.setattr(cpu_chains, real.__name__, wrapped)

    spy("map", cpu_chains.index_by_pixel)
    spy("tail", cpu_chains.row_with_tail)
    lowering = build_and_check(_expand_depthwise(cin=cin, mid=mid, stride=stride, hw=hw))
    assert list(conv_kernels(lowering).values()) == ["conv_depthwise"], lowering.kernels
    assert {"rows": set(), "map": {"map"}, "map, one tail": {"map", "tail"}}[walk] == taken


@pytest.mark.parametrize("pixels, channels, chunk", [
    (7 * 7, 960, 96),     # 10 chunks of 6 vectors: at least MIN_CHUNKS, 18 KiB each
    (28 * 28, 192, 16),   # 12 vectors: one each, so that there are MIN_CHUNKS or more
    (112 * 112, 96, 16),  # one vector is already 784 KiB (over CHUNK_BYTES): the floor
    (14 * 14, 576, 64),   # 36 vectors: 9 chunks of 4
])
def test_chunk_size(pixels, channels, chunk):
    assert chunk_channels(pixels, channels, 16) == chunk
    assert channels // chunk >= MIN_CHUNKS or chunk == 16


@pytest.mark.parametrize("height, stride, rows", [
    (56, 2, 7),    # 7 output rows read 14 (+1) conv rows: 8 bands
    (56, 1, 14),   # 4 bands, each recomputing 2 of its 16 conv rows
    (112, 1, 14),
    (14, 2, 7),    # two bands
    (30, 1, 15),   # the smallest divisor reaching BAND_ROWS
    (14, 1, 0),    # one band would be the whole map: none
    (7, 2, 0),     # 7 is prime
    (29, 1, 0),
])
def test_band_rows(height, stride, rows):
    assert band_rows(height, stride) == rows


def test_bands_widen_the_chunks():
    # MobileNetV2's 112x112 16 -> 96 chain on AVX2: without bands, one vector per chunk (the
    # map's 784 KiB per vector is already over CHUNK_BYTES); in 7-row bands the chunks take
    # the conv's own tile (4 x 2 vectors) and 8 bands x 6 chunks share the threads
    avx2 = CpuShape(lanes=8, registers=12, live=16, pointwise=True)
    assert plan([1, 112, 112, 96], 56, 16, avx2) == (7, 16)
    assert chunk_channels(112 * 112, 96, 8) == 8
    # the tuner's "whole map" knob and a conv walking its whole map take no bands
    assert plan([1, 112, 112, 96], 56, 16, avx2, Knobs(band=-1)) == (0, 8)
    assert plan([1, 112, 112, 96], 56, 16, avx2, by_map=True)[0] == 0


@pytest.mark.parametrize("hw, k_b, stride, dilation, pads", [
    (56, 3, 2, 1, [0, 0, 1, 1]),  # TF "SAME": no top or left padding, 4 bands of 7 rows
    (30, 5, 1, 1, None),  # 2 bands of 15 rows, each with a 4-row halo
    (28, 3, 1, 2, None),  # dilated: a 4-row halo
    (28, 3, 2, 1, None),  # 14 rows: 2 bands of 7
])
def test_banded_chain_matches_onnxruntime(hw, k_b, stride, dilation, pads):
    lowering = build_and_check(_expand_depthwise(k_b=k_b, stride=stride, dilation=dilation,
                                                 hw=hw, dw_pads=pads))
    assert list(conv_kernels(lowering).values()) == ["conv_depthwise"], lowering.kernels


@pytest.mark.parametrize("mid", [64, 256])
def test_chunked_kernel_matches_onnxruntime(mid):
    # 64 channels on AVX-512: 4 one-vector chunks; 256: 16 of them
    lowering = build_and_check(_expand_depthwise(mid=mid))
    assert list(conv_kernels(lowering).values()) == ["conv_depthwise"]


def test_padding_free_depthwise_merges():
    lowering = build_and_check(_expand_depthwise(dw_pad=False))
    assert list(conv_kernels(lowering).values()) == ["conv_depthwise"]


def test_conv_without_epilogue_merges():
    # no bias, no activation: the depthwise conv reads the conv's accumulators directly
    nodes = [helper.make_node("Conv", ["x", "w1"], ["c"], kernel_shape=[1, 1]),
             helper.make_node("Conv", ["c", "w2"], ["y"], group=64, kernel_shape=[3, 3],
                              pads=[1] * 4)]
    model = tiny_model(nodes, [1, 16, 28, 28], [random_const("w1", (64, 16, 1, 1), RNG),
                                                 random_const("w2", (64, 1, 3, 3), RNG)])
    lowering = build_and_check(model)
    assert list(conv_kernels(lowering).values()) == ["conv_depthwise"], lowering.kernels


def test_conv_output_read_twice_does_not_merge():
    # "a" also feeds an Add: the conv's output must be written out, so the kernels stay apart
    extra = [helper.make_node("MaxPool", ["a"], ["p"], kernel_shape=[3, 3], pads=[1] * 4),
             helper.make_node("Add", ["d", "p"], ["y"])]
    lowering = build_and_check(_expand_depthwise(extra=extra))
    assert "conv_depthwise" not in lowering.kernels.values()
    assert sorted(conv_kernels(lowering).values()) == ["reduction_tile"] * 2


def test_pooling_after_conv_does_not_merge():
    nodes = [helper.make_node("Conv", ["x", "w1"], ["c"], kernel_shape=[1, 1]),
             helper.make_node("Relu", ["c"], ["a"]),
             helper.make_node("MaxPool", ["a"], ["y"], kernel_shape=[3, 3], pads=[1] * 4)]
    lowering = build_and_check(tiny_model(nodes, [1, 16, 28, 28],
                                          [random_const("w1", (64, 16, 1, 1), RNG)]))
    assert "conv_depthwise" not in lowering.kernels.values()


def _fused(model):
    import tvm

    from edgec.compiler.codegen.pipelines import fused

    target = targets.get("host")
    with target.tvm_target():
        mod = codegen.import_model(model, target, {"x": [1, 16, 28, 28]})
        return fused(target.tvm_target())(mod), tvm


def test_merging_twice_changes_nothing():
    mod, tvm = _fused(_expand_depthwise())
    kernels = kernel_names(mod)
    assert sum(k.count("conv2d") == 2 for k in kernels) == 1, kernels
    again = merge_conv_depthwise(mod)
    tvm.ir.assert_structural_equal(again, mod)


def test_rejected_merge_keeps_two_kernels():
    # `accept` vets each merged kernel (the pipeline's: that the conv_depthwise rule takes it)
    import tvm

    mod = legalized(_expand_depthwise(), [1, 16, 28, 28])
    seen = []
    kept = merge_conv_depthwise(mod, accept=lambda f: seen.append(f) or False)
    assert len(seen) == 1
    tvm.ir.assert_structural_equal(kept, mod)
    merged = merge_conv_depthwise(mod, accept=lambda f: True)

    def calls(m):
        return len(m["main"].body.blocks[0].bindings)

    assert calls(merged) == calls(mod) - 1


def test_sliced_silu_between_conv_and_depthwise_stays_apart():
    """A conv whose channels pad_channels pads (76 -> 80), SiLU as exported (x * sigmoid(x),
    whose Mul takes a Slice back to 76 channels), then a 5x5 stride-2 depthwise conv
    (EfficientNet's block): the chain rule declines the slice, both convs keep a rule of
    their own (merged, the kernel fell back to TVM's default schedule)."""
    nodes = [helper.make_node("Conv", ["x", "w1", "b1"], ["c"], kernel_shape=[1, 1]),
             helper.make_node("Sigmoid", ["c"], ["s"]),
             helper.make_node("Mul", ["c", "s"], ["a"]),
             helper.make_node("Conv", ["a", "w2"], ["y"], group=76, kernel_shape=[5, 5],
                              strides=[2, 2], pads=[2] * 4)]
    model = tiny_model(nodes, [1, 16, 24, 24], [random_const("w1", (76, 16, 1, 1), RNG),
                                                 random_const("b1", (76,), RNG),
                                                 random_const("w2", (76, 1, 5, 5), RNG)])
    lowering = build_and_check(model)
    assert "unscheduled" not in lowering.kernels.values(), lowering.kernels
    if any("conv 76->80" in line for line in lowering.graph):  # vectors of 4 need no padding
        assert sorted(conv_kernels(lowering).values()) == ["reduction_tile"] * 2
