"""cpu/group_shuffle.py: grouped convs whose groups are narrower than a vector, on full
vectors across groups. Tiny grouped convs (with and without padding, strided, with a bias +
ReLU epilogue or a residual add, the compress pair's grouped KxK + 1x1) against onnxruntime
over several calls, the rule recorded where the host's vectors are wider than a group; the
x86 kernel permutes its inputs instead of inserting them lane by lane; the shapes it must
leave to the tile rule: a grouped conv reading the graph's NCHW input through a merged
transpose, a row of prime width."""

from __future__ import annotations

import platform

import numpy as np
import pytest
from onnx import helper

from edgec import targets
from edgec.compiler.codegen.cpu.group_shuffle import _pixels
from edgec.compiler.codegen.cpu.schedules import RULES
from edgec.compiler.codegen.cpu.tiles import CpuShape, cpu_shape

from conftest import build_and_check, host_disassembly, random_const, tiny_model

RNG = np.random.default_rng(0)
LANES = cpu_shape(targets.get("host").tvm_target()).lanes


def _grouped(c: int, n: int, groups: int, hw: int = 12, stride: int = 1, pad: int = 1,
             tail: str = "") -> tuple:
    """A 1x1 conv + ReLU (the previous layer: the grouped conv reads a channels-last tensor,
    not the graph's NCHW input through a transpose), then a grouped 3x3 conv c -> n in
    `groups` groups; `tail`: "relu" (bias + ReLU), "add" (a residual add of its input), "pair"
    (then a 1x1 conv with bias, as compress writes)."""
    inits = [random_const("w0", (c, c, 1, 1), RNG), random_const("w", (n, c // groups, 3, 3), RNG)]
    inputs = ["x1", "w"]
    if tail == "relu":
        inits.append(random_const("b", (n,), RNG))
        inputs.append("b")
    out = "y" if not tail else "k"
    nodes = [helper.make_node("Conv", ["x", "w0"], ["x0"]),
             helper.make_node("Relu", ["x0"], ["x1"]),
             helper.make_node("Conv", inputs, [out], kernel_shape=[3, 3], group=groups,
                              strides=[stride] * 2, pads=[pad] * 4)]
    if tail == "relu":
        nodes.append(helper.make_node("Relu", ["k"], ["y"]))
    elif tail == "add":
        nodes.append(helper.make_node("Add", ["k", "x1"], ["y"]))
    elif tail == "pair":
        inits += [random_const("w1", (c, n, 1, 1), RNG), random_const("b1", (c,), RNG)]
        nodes.append(helper.make_node("Conv", ["k", "w1", "b1"], ["y"]))
    return tiny_model(nodes, [1, c, hw, hw], inits), n // groups


CASES = {
    "4x4": dict(c=16, n=16, groups=4),
    "4x4-s2": dict(c=16, n=16, groups=4, stride=2),
    "4x4-relu": dict(c=16, n=16, groups=4, tail="relu"),
    "4x4-add": dict(c=16, n=16, groups=4, tail="add"),
    "4x4-pair": dict(c=16, n=16, groups=4, tail="pair", hw=16),
    "8x2-pair": dict(c=32, n=16, groups=8, tail="pair"),
    "2x8": dict(c=16, n=16, groups=2, hw=10),
    "4x4-unpadded": dict(c=16, n=16, groups=4, pad=0, hw=14),
}


@pytest.mark.parametrize("name", CASES)
def test_grouped_conv_matches_onnxruntime(name):
    model, per_group = _grouped(**CASES[name])
    lowering = build_and_check(model)  # within 1e-4 x max|ref| over several calls
    assert set(lowering.kernels.values()) <= set(RULES), lowering.kernels
    if 1 < per_group < LANES and LANES % per_group == 0:
        assert "group_shuffle" in lowering.kernels.values(), lowering.kernels
    else:
        assert "group_shuffle" not in lowering.kernels.values(), lowering.kernels


@pytest.mark.skipif(platform.machine() != "x86_64" or LANES < 8,
                    reason="reads x86 AVX instructions")
def test_the_kernel_permutes_its_inputs(tmp_path):
    model, _ = _grouped(16, 16, 4, hw=16)
    asm = host_disassembly(model, tmp_path)
    permutes = sum(asm.count(op) for op in ("vpermps", "vpermilps", "vshufps", "vpermt2ps",
                                              "vpermi2ps"))
    assert permutes > 0
    assert asm.count("vinsertps") < permutes  # not a gather assembled lane by lane


def test_a_conv_on_the_nchw_input_is_left_to_the_tile_rule():
    model = tiny_model([helper.make_node("Conv", ["x", "w"], ["y"], kernel_shape=[3, 3],
                                         group=4, pads=[1] * 4)],
                       [1, 16, 12, 12], [random_const("w", (16, 4, 3, 3), RNG)])
    lowering = build_and_check(model)
    assert "group_shuffle" not in lowering.kernels.values(), lowering.kernels


def test_tiles_fit_the_registers():
    avx512 = CpuShape(lanes=16, registers=24)
    assert _pixels(32, 1, avx512) == 8
    assert _pixels(14, 1, avx512) == 7
    assert _pixels(32, 4, avx512) == 4  # 4 pixels x (1 accumulator + 4 input registers)
    assert _pixels(13, 1, avx512) == 0  # a prime row: the tile rule's tails instead
