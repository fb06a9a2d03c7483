"""The fuzzer in CI: a few dozen random valid CNN graphs (tests/fuzz.py), each compiled and
called several times against onnxruntime. `python tests/fuzz.py --count 500` runs more."""

from __future__ import annotations

import fuzz
import numpy as np
import onnx
import pytest

SEEDS = range(1000, 1040)  # not the seeds a developer's default run starts at


@pytest.mark.parametrize("seed", SEEDS)
def test_fuzzed_graph(seed):
    verdict = fuzz.check(seed)
    assert verdict.kind in ("ok", "refused"), verdict.detail


def test_generator_is_seeded_and_valid():
    a, b = fuzz.generate(7), fuzz.generate(7)
    assert a.SerializeToString() == b.SerializeToString()
    onnx.checker.check_model(a, full_check=True)
    ops = {n.op_type for s in range(60) for n in fuzz.generate(s).graph.node}
    assert {"Conv", "ConvTranspose", "MaxPool", "AveragePool", "LpPool", "Pad", "Concat",
            "Resize", "Gemm", "BatchNormalization"} <= ops, ops
    ranks = {len(fuzz.generate(s).graph.input[0].type.tensor_type.shape.dim) for s in range(60)}
    assert ranks == {3, 4, 5}


def test_wrong_numbers_are_caught(monkeypatch):
    """The judge itself: an artifact whose output is off is 'wrong', not 'ok'."""
    from edgec import runtime

    real = runtime.CompiledModel.__call__

    def off(self, *args, **kwargs):
        return {k: v + np.float32(1.0) for k, v in real(self, *args, **kwargs).items()}

    monkeypatch.setattr(runtime.CompiledModel, "__call__", off)
    assert fuzz.check(3).kind == "wrong"
