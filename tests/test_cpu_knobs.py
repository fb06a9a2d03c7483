"""The rule variants `edgec tune` times (codegen/cpu_knobs.py): edgec's conv schedule with its
tile, pixel walk or K-blocking fixed. Each is new code, not the rule's, and each built into a
model matches onnxruntime (ORT_DISABLE_ALL) within 1e-4 relative."""

from __future__ import annotations

import functools

import numpy as np
import pytest
from onnx import helper

from edgec import targets
from edgec.compiler import codegen
from edgec.compiler.codegen.cpu import knobs as cpu_knobs
from edgec.compiler.codegen.cpu import schedules as cpu_schedules
from edgec.compiler.codegen.cpu.tiles import CpuShape, Knobs

from conftest import build_and_check, random_const, tiny_model

# These tests are about the direct conv schedules (and what merges into them).
pytestmark = pytest.mark.usefixtures("direct_convs")

RNG = np.random.default_rng(3)
AVX2 = CpuShape(lanes=8, registers=12, live=16, pointwise=True)


def _conv(hw: int, cin: int, cout: int, k: int, residual: bool = False):
    nodes = [helper.make_node("Conv", ["x", "w", "b"], ["c"], pads=[k // 2] * 4)]
    inits = [random_const("w", (cout, cin, k, k), RNG), random_const("b", (cout,), RNG)]
    if residual:
        nodes.append(helper.make_node("Add", ["c", "r"], ["c2"]))
        inits.append(random_const("r", (1, cout, hw, hw), RNG))
    nodes.append(helper.make_node("Relu", ["c2" if residual else "c"], ["y"]))
    return tiny_model(nodes, [1, cin, hw, hw], inits)


def _pool(hw: int, channels: int):
    """A conv, then the pool (channels-last like the conv: alone it would stay NCHW)."""
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"]),
             helper.make_node("MaxPool", ["c"], ["y"], kernel_shape=[3, 3], strides=[2, 2],
                              pads=[1] * 4)]
    return tiny_model(nodes, [1, 8, hw, hw], [random_const("w", (channels, 8, 1, 1), RNG)])


def _chain(hw: int, cin: int, mid: int):
    """1x1 conv -> ReLU -> 3x3 depthwise -> ReLU: one merged kernel (cpu/chains.py)."""
    nodes = [helper.make_node("Conv", ["x", "w1"], ["c1"]),
             helper.make_node("Relu", ["c1"], ["r1"]),
             helper.make_node("Conv", ["r1", "w2"], ["c2"], group=mid, pads=[1] * 4),
             helper.make_node("Relu", ["c2"], ["y"])]
    return tiny_model(nodes, [1, cin, hw, hw], [random_const("w1", (mid, cin, 1, 1), RNG),
                                                random_const("w2", (mid, 1, 3, 3), RNG)])


def _kernels(model, shape) -> dict:
    """The model's fused kernels before scheduling, as tune sees them."""
    from tvm import tirx

    from edgec.compiler.codegen.pipelines import fused

    tgt = targets.get("host")
    tvm_target = tgt.tvm_target()
    with tvm_target:
        mod = fused(tvm_target)(codegen.import_model(model, tgt, {"x": shape}))
    return {gv.name_hint: f for gv, f in mod.functions_items() if isinstance(f, tirx.PrimFunc)}


def test_knob_sets_and_variants():
    import tvm_ffi

    funcs = _kernels(_conv(7, 64, 128, 3, residual=True), [1, 64, 7, 7])
    conv = next(f for name, f in funcs.items() if "conv2d" in name)
    sets = cpu_knobs.knob_sets(conv, AVX2)
    walks = {k.walk for k in sets if not k.pixels_outer}
    assert walks == {"rows", "map"}, sets
    assert Knobs(pixels_outer=True) in sets, sets  # the rule's tile, pixel tiles outermost
    # tiles beyond the rule's live-register limit are tried: 6 x 2 holds 12 accumulators
    assert Knobs(tile=(6, 2), walk="map", k_block=False) in sets, sets
    assert all(k.tile is None or k.tile[0] * k.tile[1] >= cpu_knobs.MIN_ACCUMULATORS
               for k in sets)
    found = cpu_knobs.variants(conv, AVX2)
    rule = cpu_schedules.reduction_tile(conv, AVX2)
    hashes = [tvm_ffi.structural_hash(s.mod) for _, s in found]
    assert len(found) >= 8 and len(set(hashes)) == len(hashes), [k for k, _ in found]
    assert tvm_ffi.structural_hash(rule.mod) not in hashes
    # elementwise kernels have no knobs
    assert all(cpu_knobs.knob_sets(f, AVX2) == [] for name, f in funcs.items()
               if "conv2d" not in name)


def test_chain_knobs_one_at_a_time():
    funcs = _kernels(_chain(28, 16, 128), [1, 16, 28, 28])
    chain = next(f for name, f in funcs.items() if name.count("conv2d") == 2)
    assert cpu_schedules.schedule(chain, AVX2)[0] == "conv_depthwise"
    sets = cpu_knobs.knob_sets(chain, AVX2)
    assert all(sum(x not in (None, 0) for x in (k.tile, k.depthwise, k.chunk, k.band)) == 1
               for k in sets), sets
    assert {bool(k.tile) for k in sets} == {True, False} and any(k.chunk for k in sets), sets
    # a 28-row map is cut into two 14-row bands (BAND_ROWS): the variants are the whole map
    # and bands half as tall (doubled, one band is the whole map again)
    assert [k.band for k in sets if k.band] == [-1, 7], sets
    found = cpu_knobs.variants(chain, AVX2)
    assert len(found) >= 4, [k for k, _ in found]
    assert any(k.band == -1 for k, _ in found), [k for k, _ in found]


def test_pointwise_chain_tiles_walk_the_map():
    """A chain whose 1x1 conv walks its chunk's map (cpu_chains): its conv tiles are ranked
    over the 49 pixels, tails allowed, and the rows are one more variant."""
    funcs = _kernels(_chain(7, 64, 384), [1, 64, 7, 7])
    chain = next(f for name, f in funcs.items() if name.count("conv2d") == 2)
    sets = cpu_knobs.knob_sets(chain, AVX2)
    assert Knobs(walk="rows") in sets, sets
    assert any(7 % k.tile[0] for k in sets if k.tile), sets  # not a 7-wide row's tile
    found = [k for k, _ in cpu_knobs.variants(chain, AVX2)]
    assert Knobs(walk="rows") in found and len(found) >= 4, found


def test_chain_winners_combine():
    funcs = _kernels(_chain(28, 16, 128), [1, 16, 28, 28])
    chain = next(f for name, f in funcs.items() if name.count("conv2d") == 2)
    found = cpu_knobs.variants(chain, AVX2)
    tile = next(k for k, _ in found if k.tile)
    depthwise = next(k for k, _ in found if k.depthwise)
    timed = [(k, 2.0) for k, _ in found] + [(tile, 0.5), (depthwise, 0.6)]
    merged = cpu_knobs.combined(chain, AVX2, timed, rule_secs=1.0)
    assert [k for k, _ in merged] == [Knobs(tile=tile.tile, depthwise=depthwise.depthwise)]
    # one winner alone has nothing to combine with; nothing combines across a slower rule
    assert cpu_knobs.combined(chain, AVX2, [(tile, 0.5), (depthwise, 1.5)], rule_secs=1.0) == []
    conv = next(f for name, f in _kernels(_conv(7, 64, 128, 3), [1, 64, 7, 7]).items()
                if "conv2d" in name)
    walks = [(k, 0.5) for k, _ in cpu_knobs.variants(conv, AVX2)]
    assert cpu_knobs.combined(conv, AVX2, walks, rule_secs=1.0) == []


def test_pool_takes_one_pixel_of_channels():
    """Max pooling takes 1 pixel x up to 8 vectors per tile (single thread: 271 -> 71 us on
    ResNet-18's); its variants walk rows only (no reduction over channels: no map)."""
    funcs = _kernels(_pool(28, 64), [1, 8, 28, 28])
    pool = next(f for name, f in funcs.items() if "pool" in name)
    sch = cpu_schedules.reduction_tile(pool, AVX2)
    text = sch.mod["main"].script()
    # w_i = 1 pixel, u = 8 vectors unrolled, v = 8 lanes
    assert all(f"T.{loop}(T.int64({n}))" in text
               for loop, n in (("unroll", 1), ("unroll", 8), ("vectorized", 8))), text
    assert {k.walk for k in cpu_knobs.knob_sets(pool, AVX2)} == {"rows"}


@pytest.mark.parametrize("model, shape, knobs", [
    (_conv(7, 64, 128, 3, residual=True), [1, 64, 7, 7], Knobs((6, 2), "map", False)),
    (_conv(7, 64, 128, 3, residual=True), [1, 64, 7, 7], Knobs((5, 2), "map", False)),
    (_conv(7, 64, 128, 3), [1, 64, 7, 7], Knobs((4, 2), "rows")),  # a tail per row
    (_conv(14, 32, 64, 3), [1, 32, 14, 14], Knobs((3, 4), "rows")),  # past the live limit
    (_conv(7, 960, 160, 1), [1, 960, 7, 7], Knobs(None, "rows", False)),  # not K-blocked
    (_conv(7, 960, 160, 1), [1, 960, 7, 7], Knobs((2, 4), "rows")),  # K-blocked, 2 x 4
    (_pool(28, 64), [1, 8, 28, 28], Knobs((4, 2), "rows")),
    (_chain(28, 16, 128), [1, 16, 28, 28], Knobs(tile=(7, 2))),
    (_chain(28, 16, 128), [1, 16, 28, 28], Knobs(depthwise=(7, 1))),
    (_chain(28, 16, 128), [1, 16, 28, 28], Knobs(chunk=32)),
    (_chain(7, 64, 384), [1, 64, 7, 7], Knobs(tile=(6, 2))),  # over the map, a 1 x 2 tail
    (_chain(7, 64, 384), [1, 64, 7, 7], Knobs(walk="rows")),
    (_chain(28, 16, 128), [1, 16, 28, 28], Knobs(band=-1)),  # the whole map, not 2 bands
    (_chain(28, 16, 128), [1, 16, 28, 28], Knobs(band=7)),  # 4 bands with a 2-row halo
    (_conv(14, 32, 64, 1), [1, 32, 14, 14], Knobs(pixels_outer=True)),
    (_conv(7, 64, 128, 3, residual=True), [1, 64, 7, 7], Knobs(pixels_outer=True)),
], ids=["map-6x2-tail", "map-5x2-tail", "rows-4x2-tail", "rows-3x4", "1x1-unblocked",
        "1x1-blocked-2x4", "pool-4x2", "chain-conv-7x2", "chain-dw-7x1", "chain-chunk-32",
        "chain-map-6x2-tail", "chain-rows", "chain-whole-map", "chain-bands-of-7",
        "1x1-pixels-outer", "3x3-pixels-outer"])
def test_variant_matches_onnxruntime(monkeypatch, model, shape, knobs):
    monkeypatch.setattr(cpu_schedules, "cpu_shape", lambda _target: AVX2)
    funcs = _kernels(model, shape)
    chain = any(name.count("conv2d") == 2 for name in funcs)
    rule = "conv_depthwise" if chain else "reduction_tile"
    real = cpu_schedules.RULES[rule]
    assert any(real(f, AVX2, knobs) is not None for f in funcs.values()), knobs
    monkeypatch.setitem(cpu_schedules.RULES, rule, functools.partial(real, knobs=knobs))
    kernels = build_and_check(model).kernels
    assert rule in kernels.values(), kernels
