"""Reference models: valid ONNX in exporter shape, runnable in onnxruntime, the seeds' params."""

from __future__ import annotations

import numpy as np
import onnx
import pytest

from edgec import models
from edgec.compiler.analysis import analyze

from conftest import ort_run


@pytest.mark.parametrize("name", [n for n in models.MODELS if n != "alexnet"])
def test_model_is_valid_and_runs(name):
    model = models.build(name)
    onnx.checker.check_model(model, full_check=True)
    shape = [d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim]
    x = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
    (y,) = ort_run(model, {"input": x})
    declared = [d.dim_value for d in model.graph.output[0].type.tensor_type.shape.dim]
    assert list(y.shape) == declared
    assert np.isfinite(y).all() and np.abs(y).max() > 1e-3, "activations vanished or exploded"


def test_seeded_weights_are_deterministic():
    a = models.build("lenet5", seed=3).SerializeToString()
    assert a == models.build("lenet5", seed=3).SerializeToString()
    assert a != models.build("lenet5", seed=4).SerializeToString()


def test_exporter_style_nodes_present():
    ops = {n.op_type for n in models.build("mobilenet_v2").graph.node}
    assert {"BatchNormalization", "Dropout", "Flatten", "Gemm", "Clip"} <= ops
    v3 = {n.op_type for n in models.build("mobilenet_v3_small").graph.node}
    assert {"HardSwish", "HardSigmoid", "Mul", "GlobalAveragePool"} <= v3
    shuffle = [n.op_type for n in models.build("shufflenet_v2").graph.node]
    assert "Split" in shuffle and "Transpose" in shuffle


def test_lenet5_params_match_seed_table():
    rows = [n for n in analyze(models.build("lenet5")).nodes if n.params]
    assert [n.params for n in rows] == [156, 2416, 48120, 10164, 850]
    assert sum(n.params for n in rows) == 61706


def test_alexnet_params_match_seed_table():
    cost = analyze(models.build("alexnet"))
    rows = [(n.weights, n.biases) for n in cost.nodes if n.params]
    assert rows == [(34848, 96), (614400, 256), (884736, 384), (1327104, 384), (884736, 256),
                    (37748736, 4096), (16777216, 4096), (4096000, 1000)]
    assert cost.params == 62_378_344
    shapes = [n.output_shape for n in cost.nodes if n.op in ("Conv", "MaxPool")]
    assert shapes[:3] == [[1, 96, 54, 54], [1, 96, 26, 26], [1, 256, 26, 26]]
    assert shapes[3] == [1, 256, 13, 13] and shapes[-1] == [1, 256, 6, 6]


def test_models_cli(cli, tmp_path):
    code, out, _ = cli("models", "list")
    assert code == 0 and all(name in out for name in models.MODELS)
    code, out, _ = cli("models", "export", "squeezenet1_1", "-o", tmp_path / "s.onnx")
    assert code == 0 and (tmp_path / "s.onnx").is_file()
    onnx.checker.check_model(str(tmp_path / "s.onnx"))
    code, _, err = cli("models", "export", "resnet1000", "-o", tmp_path / "x.onnx")
    assert code == 2 and "unknown model 'resnet1000'" in err
    assert not (tmp_path / "x.onnx").exists()
