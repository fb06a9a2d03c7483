"""Models with real-world structure, exported by torch (models/realworld.py): each compiles for
the host, matches onnxruntime (compile's own check, then two calls of the artifact against a
fresh onnxruntime session) and leaves no kernel to TVM's default schedule. compile names the
kernels it does leave there (the summary line and a warning).

Tolerance of the independent check: max|diff| <= RTOL (1e-4) x max|ref| per output."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import helper

import edgec
from edgec import runtime
from edgec.compiler.report import codegen_line, compile_summary, unscheduled
from edgec.compiler.tolerance import RTOL

from conftest import ort_run, save, tiny_model

torch = pytest.importorskip("torch")

from edgec.models.realworld import REALWORLD, export  # noqa: E402

MODELS = [pytest.param(n, marks=pytest.mark.slow) if spec.large else n
          for n, spec in REALWORLD.items()]
# ops each model's export must hold: the structure it stands for
STRUCTURE = {"mnv3_small_text": {"HardSwish", "HardSigmoid", "GlobalAveragePool", "Softmax"},
             "dbnet_small": {"ConvTranspose", "Resize", "Concat", "Sigmoid", "HardSwish"},
             "yolo_small": {"Sigmoid", "Mul", "Concat", "Resize", "MaxPool", "Slice"},
             "effnet_small": {"Sigmoid", "Mul", "GlobalAveragePool", "Gemm"}}


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    root = tmp_path_factory.mktemp("realworld")
    cache = {}

    def get(name: str):
        if name not in cache:
            cache[name] = export(name, root / f"{name}.onnx")
        return cache[name]

    return get


@pytest.mark.parametrize("name", [n for n, s in REALWORLD.items() if not s.large])
def test_export_has_real_world_structure(exported, name):
    model = onnx.load(str(exported(name)))
    ops = {n.op_type for n in model.graph.node}
    assert STRUCTURE[name] <= ops, STRUCTURE[name] - ops
    assert "BatchNormalization" in ops  # left for edgec's fold_batchnorm
    assert model.opset_import[0].version == 17
    dims = [d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim]
    assert dims == list(REALWORLD[name].shape)
    widths = {int(onnx.numpy_helper.to_array(t).shape[0]) for t in model.graph.initializer
              if len(t.dims) == 4}
    assert any(w % 16 for w in widths), sorted(widths)  # channel counts vectors do not divide
    if name == "dbnet_small":
        modes = {a.s for n in model.graph.node if n.op_type == "Resize" for a in n.attribute
                 if a.name == "mode"}
        assert modes == {b"nearest", b"linear"}


@pytest.mark.parametrize("name", MODELS)
def test_compiles_matches_and_every_kernel_is_scheduled(exported, tmp_path, name):
    src = exported(name)
    result = edgec.compile(src, output=tmp_path / "art", latency=False)
    manifest = result.manifest
    assert manifest["validation"]["ok"] is True
    kernels = manifest["codegen"]["kernels"]
    assert kernels and unscheduled(manifest["codegen"]) == []
    assert not any("default schedule" in w for w in result.warnings)

    model = runtime.load(result.artifact)
    calls = []
    for seed in (11, 12):
        feed = runtime.random_inputs(model.inputs, seed=seed)
        got = model(**feed)
        kept = {k: np.array(v, copy=True) for k, v in got.items()}
        for (out, value), want in zip(kept.items(), ort_run(src, feed)):
            assert value.shape == want.shape, out
            diff, scale = np.abs(value - want).max(), np.abs(want).max()
            assert diff <= RTOL * scale, (name, out, seed, diff, scale)
        calls.append((got, kept))
    for got, kept in calls:  # a second call left the first call's outputs as they were
        assert all(np.array_equal(np.asarray(got[k]), v) for k, v in kept.items())


def _instance_norm(path):
    """InstanceNormalization: mean and variance over H x W, which no edgec rule takes."""
    rng = np.random.default_rng(0)
    nodes = [helper.make_node("InstanceNormalization", ["x", "s", "b"], ["y"])]
    inits = {"s": rng.uniform(0.5, 1.5, 8).astype(np.float32),
             "b": rng.uniform(-0.2, 0.2, 8).astype(np.float32)}
    return save(tiny_model(nodes, [1, 8, 6, 6], inits), path)


def test_compile_names_the_kernels_left_to_tvm(cli, tmp_path):
    src = _instance_norm(tmp_path / "inorm.onnx")
    result = edgec.compile(src, output=tmp_path / "art", latency=False)
    left = unscheduled(result.manifest["codegen"])
    assert left and all(result.manifest["codegen"]["kernels"][k] == "unscheduled"
                        for k in left)
    warning = next(w for w in result.warnings if "default schedule" in w)
    line = next(ln for ln in compile_summary(result.manifest, "art")
                if ln.startswith("codegen"))
    for kernel in left:
        assert kernel in warning and kernel in line
    code, out, err = cli("compile", src, "-o", tmp_path / "cli-art", "--no-latency")
    assert code == 0, err
    assert all(f"edgec: warning: {len(left)} kernel" in err and k in err for k in left)


def test_codegen_line_lists_unscheduled_kernels_by_name():
    gen = {"pipeline": "cpu", "seconds": 1.0, "tuning_db": None,
           "kernels": {"conv_a": "reduction_tile", "norm_b": "unscheduled",
                       "add_c": "elementwise", "mean_d": "unscheduled"}}
    line = codegen_line(gen)
    assert line.endswith("; 2 unscheduled (TVM's default schedule): mean_d, norm_b"), line
    assert "rules: 1 reduction_tile, 1 elementwise;" in line, line
    assert unscheduled(gen) == ["mean_d", "norm_b"]
    gen["kernels"] = {"conv_a": "reduction_tile"}
    assert "unscheduled" not in codegen_line(gen)


def test_benchmarks_take_the_realworld_group(exported, tmp_path):
    """benchmarks/run.py --models realworld (or names from it) without changing its default."""
    import importlib.util

    from conftest import REPO

    spec = importlib.util.spec_from_file_location("bench_run", REPO / "benchmarks" / "run.py")
    run = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(run)
    assert run.model_names("realworld") == list(REALWORLD)
    assert run.model_names("mobilenet_v2,dbnet_small") == ["mobilenet_v2", "dbnet_small"]
    assert not set(run.DEFAULT_MODELS) & set(REALWORLD)
    path = run.export_model("effnet_small", tmp_path / "e.onnx")
    assert path.read_bytes() == exported("effnet_small").read_bytes()  # seeded: the same
