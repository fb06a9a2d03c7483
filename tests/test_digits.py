"""The trained digits models: valid ONNX with BatchNorm and standard convs, the recorded
accuracy reproduced by onnxruntime on the committed test split, the split exported losslessly
as an image folder, and (slow) the training recipe reproducing the committed predictions."""

from __future__ import annotations

import json

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from PIL import Image

from edgec import models
from edgec.errors import EdgecError
from edgec.models import digits

NAMES = list(digits.TRAINED)


def predictions(model: onnx.ModelProto, images: np.ndarray) -> np.ndarray:
    """Top-1 class per image by onnxruntime, one image per run (the models have batch 1)."""
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    x = digits.model_inputs(images)
    return np.array([sess.run(None, {"input": x[i:i + 1]})[0].argmax() for i in range(len(x))])


def metadata(model: onnx.ModelProto) -> dict[str, str]:
    return {p.key: p.value for p in model.metadata_props}


@pytest.fixture(scope="module")
def split():
    return digits.test_split()


def test_test_split_shapes(split):
    images, labels = split
    assert images.dtype == np.uint8 and images.shape == (360, 32, 32)
    assert labels.dtype == np.int64 and labels.shape == (360,)
    assert np.bincount(labels).tolist() == [36, 36, 35, 37, 36, 37, 36, 36, 35, 36]


@pytest.mark.parametrize("name", NAMES)
def test_model_valid_standard_convs_with_batchnorm(name):
    model = digits.load(name)
    onnx.checker.check_model(model, full_check=True)
    assert [i.name for i in model.graph.input] == ["input"]
    assert [o.name for o in model.graph.output] == ["logits"]
    dims = [d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim]
    assert dims == [1, 1, 32, 32]
    convs = [n for n in model.graph.node if n.op_type == "Conv"]
    groups = [a.i for n in convs for a in n.attribute if a.name == "group"]
    assert convs and all(g == 1 for g in groups)
    bns = sum(n.op_type == "BatchNormalization" for n in model.graph.node)
    assert bns == len(convs), "every conv is followed by its own BatchNormalization"
    assert model.ByteSize() < 2_000_000


@pytest.mark.parametrize("name", NAMES)
def test_metadata(name):
    meta = metadata(digits.load(name))
    assert json.loads(meta["edgec.preprocess"]) == {
        "resize": [32, 32], "center_crop": None, "scale": 1 / 255, "mean": [0.5], "std": [0.5],
        "color": "gray", "layout": "nchw", "dtype": "float32"}
    assert json.loads(meta["edgec.labels"]) == [str(d) for d in range(10)]
    accuracy = meta["edgec.fp32_test_accuracy"]
    assert len(accuracy) == 6 and 0.95 <= float(accuracy) <= 1
    assert f"test accuracy {accuracy}" in digits.TRAINED[name]


@pytest.mark.parametrize("name", NAMES)
def test_recorded_accuracy_reproduced(name, split):
    images, labels = split
    model = digits.load(name)
    accuracy = (predictions(model, images) == labels).mean()
    assert f"{accuracy:.4f}" == metadata(model)["edgec.fp32_test_accuracy"]
    assert accuracy >= 0.95


def test_model_inputs_preprocessing():
    images = np.array([[[0, 255], [51, 128]]], dtype=np.uint8)
    x = digits.model_inputs(images)
    assert x.dtype == np.float32 and x.shape == (1, 1, 2, 2)
    np.testing.assert_allclose(x[0, 0], (images[0] / 255 - 0.5) / 0.5, atol=1e-6)


def test_export_data_writes_lossless_image_folder(tmp_path, split):
    images, labels = split
    out = models.export_data("digits_vgg", tmp_path / "data")
    assert out == tmp_path / "data"
    assert sorted(p.name for p in out.iterdir()) == [str(d) for d in range(10)]
    files = sorted(out.glob("*/*.png"))
    assert len(files) == 360
    for path in files:
        index, label = int(path.stem), int(path.parent.name)
        with Image.open(path) as im:
            assert im.mode == "L" and im.size == (32, 32)
            np.testing.assert_array_equal(np.asarray(im), images[index])
        assert labels[index] == label


def test_export_data_refuses_non_empty_folder_and_seeded_models(tmp_path):
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "keep.txt").write_text("mine")
    with pytest.raises(EdgecError, match="not an empty folder"):
        digits.export_data(tmp_path / "data")
    assert [p.name for p in (tmp_path / "data").iterdir()] == ["keep.txt"]
    with pytest.raises(EdgecError, match="model 'resnet18' has seeded random weights and no"):
        models.export_data("resnet18", tmp_path / "other")
    with pytest.raises(EdgecError, match="unknown model 'nope'"):
        models.export_data("nope", tmp_path / "other")
    assert not (tmp_path / "other").exists()
    (tmp_path / "empty").mkdir()
    assert len(list(digits.export_data(tmp_path / "empty").glob("*/*.png"))) == 360


def test_models_cli_exports_trained_model(cli, tmp_path):
    code, out, _ = cli("models", "list")
    assert code == 0 and all(name in out for name in NAMES)
    code, _, _ = cli("models", "export", "digits_vgg", "-o", tmp_path / "m.onnx")
    assert code == 0
    assert onnx.load(str(tmp_path / "m.onnx")) == digits.load("digits_vgg")


@pytest.mark.slow
def test_training_recipe_reproduces_committed_predictions(tmp_path, split):
    """Re-train both nets into a temporary folder (about 80 s on one core): same split, same
    test predictions as the committed models. Predictions, not bytes: another CPU's kernels
    may round differently without changing a single prediction."""
    pytest.importorskip("sklearn")
    from edgec.models import train_digits

    train_digits.main(out_dir=tmp_path)
    with np.load(tmp_path / "digits_test.npz") as data:
        np.testing.assert_array_equal(data["images"], split[0])
        np.testing.assert_array_equal(data["labels"], split[1])
    for name in NAMES:
        retrained = onnx.load(str(tmp_path / f"{name}.onnx"))
        np.testing.assert_array_equal(predictions(retrained, split[0]),
                                      predictions(digits.load(name), split[0]))
