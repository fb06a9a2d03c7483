"""What the schedule rules know of the target CPU (CpuShape), derived from its CPU model's
facts (targets/cpu/models.toml): SIMD width, vector registers, L1D and L2 sizes, FMA latency
and pipes. The tile rules (cpu/tiles.py) read the shape's fields, never the target's name.

The defaults are the x86 values the rules were first measured with (4-cycle FMAs on 2 pipes,
a 32 KiB L1D, a 512 KiB L2): a CpuShape built by hand chooses as those rules did.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

FMA_IN_FLIGHT = 8  # accumulators that hide the FMA latency: 4 cycles x 2 pipes
WEIGHTS_SHARE = 4  # a tile's weights may take 3/4 of a cache, its inputs and outputs the rest
L1_WEIGHTS = 24 * 1024  # bytes of a tile's weights kept in a 32 KiB L1 beside its inputs
L2_WEIGHTS = 384 * 1024  # ... and in a 512 KiB L2, where the next tiles of a row re-read them


@dataclass(frozen=True)
class CpuShape:
    """What a schedule needs to know about the target CPU."""

    lanes: int  # 32-bit lanes per SIMD register
    registers: int  # SIMD registers usable for accumulators
    # Where nonzero, a broadcast tile's accumulators and the operands it keeps live (see
    # candidates) stay within this many registers; see tile().
    live: int = 0
    # 1x1 convs' tiles ranked by loads per FMA (pointwise_conv)
    pointwise: bool = False
    # a depthwise tile takes the most output columns of the fewest vectors (tile_cost):
    # measured on AVX-512, counted with the ARM proxy on Cortex-A72 and A76 (models.toml)
    columns: bool = False
    int8_activation: str = "int8"  # what an int8 conv's activations are: uint8 or int8
    int8_dot: str = ""  # dot-product instruction (cpu/int8.py INSTRUCTIONS), "" where none
    in_flight: int = FMA_IN_FLIGHT  # independent accumulators that hide the FMA latency
    l1_weights: int = L1_WEIGHTS  # bytes of a tile's weights that stay in L1
    l2_weights: int = L2_WEIGHTS  # ... and in L2


def cache_share(kib: int) -> int:
    """Bytes of a `kib` KiB cache a tile's weights may take (the rest: inputs, outputs)."""
    return kib * 1024 * (WEIGHTS_SHARE - 1) // WEIGHTS_SHARE


def cpu_shape(tvm_target: Any) -> CpuShape:
    """The target CPU's shape, from its model in targets/cpu/models.toml (matched by triple,
    mcpu and features): lanes from the SIMD width; accumulators from the vector registers
    less those held for operands; `in_flight` = FMA latency x FMA pipes (one independent
    accumulator per FMA the pipes hold in flight), capped by the accumulators; the weight
    budgets from L1D and L2 (cache_share).

    Not llvm_get_vector_width: in TVM 0.27 it answers 512 for every x86-64 mcpu (znver3 and
    haswell included), and tiles sized for 32 zmm registers ran MobileNetV2 1.9x slower than
    ORT on an AVX2-only Zen 3 (the accumulators spilled to the stack).
    """
    from edgec.targets import cpu_model

    m = cpu_model(tvm_target)
    registers = m.vector_registers - m.operand_registers
    return CpuShape(lanes=m.vector_bits // 32, registers=registers, live=m.live,
                    pointwise=m.pointwise, columns=m.columns,
                    int8_activation=m.int8_activation, int8_dot=m.int8_dot,
                    in_flight=min(m.fma_latency * m.fma_pipes, registers),
                    l1_weights=cache_share(m.l1d_kib), l2_weights=cache_share(m.l2_kib))
