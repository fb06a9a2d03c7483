"""The GPU schedule phase (compiler/codegen/gpu/schedule.py) and edgec's PerOutput rule
(gpu/per_output.py): kernels dlight schedules wrongly or not at all get a rule that builds and
is right, checked on PoCL against onnxruntime over several calls; PerOutput leaves a
single-stage kernel alone; a rule that raises is passed over. The fuzz seeds that found these
(wrong results, crashed builds) run on OpenCL as regression cases."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import helper

from edgec import targets
from edgec.compiler import codegen
from edgec.compiler.codegen.gpu import per_output, schedule

from conftest import call_several, target_without_phases, tiny_model

sys.path.insert(0, str(Path(__file__).resolve().parent))
import fuzz  # noqa: E402

pytestmark = pytest.mark.skipif(not targets.device_present("opencl"),
                                reason="no OpenCL platform (./dev installs pocl-opencl-icd)")


def _grouped_conv(c_in: int, c_out: int, groups: int, shape: list[int], bias: bool,
                  **attrs) -> onnx.ModelProto:
    rng = np.random.default_rng(0)
    inits = {"w": rng.standard_normal((c_out, c_in // groups, *[1] * (len(shape) - 2)))
             .astype(np.float32)}
    if bias:
        inits["b"] = rng.standard_normal(c_out).astype(np.float32)
    node = helper.make_node("Conv", ["x", *inits], ["y"], group=groups, **attrs)
    return tiny_model([node], shape, inits)


def _build(model: onnx.ModelProto, tmp_path: Path) -> tuple[dict[str, str], object]:
    """Compile for opencl; (kernel -> rule, the loaded artifact)."""
    import edgec
    from edgec import runtime

    onnx.save_model(model, str(tmp_path / "m.onnx"))
    result = edgec.compile(tmp_path / "m.onnx", output=tmp_path / "out", target="opencl",
                           validate=False)
    return result.manifest["codegen"]["kernels"], runtime.load(tmp_path / "out")


@pytest.mark.parametrize("shape, attrs", [
    ([1, 4, 3, 4], {}),
    ([2, 11, 3, 1, 4], {"strides": [2, 1, 2], "dilations": [1, 2, 1]}),
])
def test_grouped_conv_with_bias_is_one_thread_per_output_and_right(shape, attrs, tmp_path):
    # two outputs per group; the bias add is a second stage dlight's Fallback would race on
    model = _grouped_conv(shape[1], 2 * shape[1], shape[1], shape, bias=True, **attrs)
    kernels, loaded = _build(model, tmp_path)
    assert list(kernels.values()) == ["edgec.PerOutput"]
    call_several(lambda x: loaded(x=x)["y"], model, shape)


def test_per_output_leaves_a_single_stage_kernel_alone(monkeypatch):
    model = _grouped_conv(4, 8, 4, [1, 4, 3, 4], bias=False)
    lowering = codegen.Lowering()
    codegen.lower(model, targets.get("opencl"), {"x": [1, 4, 3, 4]}, lowering)
    assert list(lowering.kernels.values()) == ["gpu.Fallback"]
    func = next(f for f in _unscheduled(model, monkeypatch).functions.values()
                if type(f).__name__ == "PrimFunc")
    assert per_output.PerOutput().apply(func, targets.get("opencl").tvm_target(), False) is None


def test_reduction_rules_do_not_take_grouped_convs(tmp_path):
    # conv with 2 groups of 7 outputs and a 3-tap reduction, + bias: dlight's Reduction took
    # it and its epilogue read other threads' sums (NaN on PoCL)
    rng = np.random.default_rng(1)
    inits = {"w": rng.standard_normal((14, 5, 1, 3, 1)).astype(np.float32),
             "b": rng.standard_normal(14).astype(np.float32)}
    model = tiny_model([helper.make_node("Conv", ["x", "w", "b"], ["y"], group=2)],
                       [1, 10, 4, 3, 4], inits)
    kernels, loaded = _build(model, tmp_path)
    assert not {"gpu.Reduction", "gpu.GeneralReduction"} & set(kernels.values())
    call_several(lambda x: loaded(x=x)["y"], model, [1, 10, 4, 3, 4])


def test_a_rule_that_raises_is_passed_over(monkeypatch):
    class Raises:
        def apply(self, func, target, tunable):
            raise ValueError("not this kernel")

    from tvm.s_tir import dlight as dl

    model = _grouped_conv(4, 8, 4, [1, 4, 3, 4], bias=False)
    func = next(f for f in _unscheduled(model, monkeypatch).functions.values()
                if type(f).__name__ == "PrimFunc")
    scheduled, name = schedule.first_rule(func, targets.get("opencl").tvm_target(),
                                          [Raises(), dl.gpu.Fallback()])
    assert name == "gpu.Fallback" and scheduled is not None
    assert schedule.first_rule(func, targets.get("opencl").tvm_target(), [Raises()]) == \
        (None, "unscheduled")


def _unscheduled(model: onnx.ModelProto, monkeypatch):
    """The model's kernels as the opencl pipeline has them before its schedule phase."""
    target = target_without_phases("opencl", ("schedule", "lower"), monkeypatch)
    shape = [d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim]
    return codegen.lower(model, target, {"x": shape})


@pytest.mark.parametrize("seed", [9, 11, 13, 26, 27, 29, 30, 43])
def test_fuzz_seeds_that_broke_opencl(seed):
    verdict = fuzz.check(seed, target="opencl")
    assert verdict.kind == "ok", verdict
