"""The CPU facts of targets/cpu/models.toml reach the tile rules (compiler/codegen/cpu/shape.py):
rpi4 and rpi5 get their cores' models, and the tile choice follows the data, not the target."""

from __future__ import annotations

import dataclasses

import pytest

from edgec import targets
from edgec.compiler.codegen.cpu.shape import (
    FMA_IN_FLIGHT,
    L1_WEIGHTS,
    L2_WEIGHTS,
    CpuShape,
    cache_share,
    cpu_shape,
)
from edgec.compiler.codegen.cpu.tiles import k_block, tile


def _shape_with(monkeypatch: pytest.MonkeyPatch, name: str, **facts: int) -> CpuShape:
    """cpu_shape of target `name`, its CPU model's `facts` replaced (the models file's other
    entries as they are)."""
    tvm_target = targets.get(name).tvm_target()
    picked = targets.cpu_model(tvm_target).name
    models = [dataclasses.replace(m, **facts) if m.name == picked else m
              for m in targets.cpu_models()]
    monkeypatch.setattr(targets, "cpu_models", lambda: models)
    return cpu_shape(tvm_target)


@pytest.mark.parametrize("name, model, l1d, l2, latency", [
    ("rpi4", "cortex-a72", 32, 1024, 3), ("rpi5", "cortex-a76", 64, 512, 4)])
def test_boards_get_their_cores_facts(name, model, l1d, l2, latency):
    tvm_target = targets.get(name).tvm_target()
    m = targets.cpu_model(tvm_target)
    assert m.name == model
    assert (m.vector_bits, m.vector_registers, m.l1d_kib, m.l2_kib, m.fma_latency,
            m.fma_pipes) == (128, 32, l1d, l2, latency, 2)
    shape = cpu_shape(tvm_target)
    assert shape.lanes == 4 and shape.registers == 32 - m.operand_registers
    assert shape.in_flight == latency * 2
    assert shape.l1_weights == l1d * 768 and shape.l2_weights == l2 * 768


def test_generic_and_x86_models_keep_the_facts_the_rules_were_measured_with():
    """Every model but the Cortex ones: 8 accumulators in flight, 24 KiB of weights in L1 and
    384 KiB in L2, 24 accumulators of 32 registers or 12 of 16: their tiles are unchanged."""
    others = [m for m in targets.cpu_models() if not m.name.startswith("cortex-")]
    assert {m.name for m in others} >= {"avx512", "avx2", "sse", "aarch64-neon", "generic"}
    for m in others:
        assert m.fma_latency * m.fma_pipes == FMA_IN_FLIGHT, m.name
        assert (cache_share(m.l1d_kib), cache_share(m.l2_kib)) == (L1_WEIGHTS, L2_WEIGHTS)
        assert m.vector_registers - m.operand_registers == m.vector_registers * 3 // 4


def test_fewer_registers_give_smaller_accumulator_tiles(monkeypatch):
    """The accumulator budget is the model's vector registers less its operand registers:
    an A72 with 16 registers would get a 56x56x144 depthwise tile of at most 12."""
    full = cpu_shape(targets.get("rpi4").tvm_target())
    half = _shape_with(monkeypatch, "rpi4", vector_registers=16, operand_registers=4)
    assert (full.registers, half.registers) == (24, 12)
    big, small = tile(56, 144, full), tile(56, 144, half)
    assert small[0] * small[2] <= 12 < big[0] * big[2], (small, big)
    wi, _, u = tile(7, 512, half, reduction=4608, tails=True)
    assert wi * u <= 12


def test_l1_bounds_the_tiles_weights(monkeypatch):
    """A 7x7 576 -> 960 conv: 3 vectors of 576 weights (27 KiB) fit the A76's 48 KiB share of
    its 64 KiB L1 but not the A72's 24 KiB, which keeps 2 vectors (18 KiB)."""
    a72 = cpu_shape(targets.get("rpi4").tvm_target())
    a72_big_l1 = _shape_with(monkeypatch, "rpi4", l1d_kib=64)
    small, big = tile(7, 960, a72, reduction=576), tile(7, 960, a72_big_l1, reduction=576)
    assert small[2] * small[1] * 576 * 4 <= a72.l1_weights < big[2] * big[1] * 576 * 4
    assert (small[0], small[2]) == (7, 2) and (big[0], big[2]) == (7, 3)
    # a 1x1 conv's reduction is blocked to the same L1 share
    assert k_block(576, 12, 576, a72.l1_weights) == 288
    assert k_block(576, 12, 576, a72_big_l1.l1_weights) == 0


def test_fma_latency_and_pipes_set_the_accumulators_in_flight(monkeypatch):
    """in_flight = FMA latency x pipes. A 13-wide row with 4-wide tiles (only 1 and 13 divide
    13): the AVX2 shape's dividing 1 x 4 tile (4 accumulators) leaves FMA slots idle at 8 in
    flight, and the row takes a tail; at 4 in flight it does not."""
    avx2 = CpuShape(lanes=8, registers=12, live=16, pointwise=True)
    wi, _, _ = tile(13, 256, avx2, reduction=576, tails=True)
    assert 13 % wi
    short = dataclasses.replace(avx2, in_flight=4)
    assert tile(13, 256, short, reduction=576, tails=True) == tile(13, 256, short, reduction=576)
    assert _shape_with(monkeypatch, "rpi4", fma_latency=7).in_flight == 14
