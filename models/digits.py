"""Two small CNNs trained on scikit-learn's handwritten digits, committed as ONNX with their
test split: models with real accuracy, so the validation harness can measure what a transform
costs in accuracy rather than only in agreement.

`models/trained/` holds `digits_vgg.onnx`, `digits_resnet.onnx` (each carrying its
preprocessing, labels and fp32 test accuracy in `metadata_props`) and `digits_test.npz`
(360 upsampled 32×32 uint8 images and their labels). `train_digits.py` is the recipe that
wrote them; this module only reads them (numpy, onnx and Pillow; no torch, no scikit-learn).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx

from edgec.errors import EdgecError

TRAINED_DIR = Path(__file__).resolve().parent / "trained"
TEST_SPLIT = TRAINED_DIR / "digits_test.npz"

# One line each; the accuracy is the one recorded in the file (a test holds them equal).
TRAINED: dict[str, str] = {
    "digits_vgg": "VGG-style CNN trained on sklearn digits, 32x32 grey: 3 stages of 2 "
                  "conv3x3-BN-ReLU (32/64/128 ch); test accuracy 1.0000.",
    "digits_resnet": "ResNet-style CNN trained on sklearn digits, 32x32 grey: 3 stages of 2 "
                     "basic blocks (16/32/64 ch); test accuracy 0.9944.",
}

# The model input is (pixel * scale - mean) / std on the 32×32 grayscale image, NCHW float32.
PREPROCESS: dict = {"resize": [32, 32], "center_crop": None, "scale": 1 / 255, "mean": [0.5],
                    "std": [0.5], "color": "gray", "layout": "nchw", "dtype": "float32"}
LABELS: list[str] = [str(d) for d in range(10)]


def load(name: str) -> onnx.ModelProto:
    """The committed trained model `name` ("digits_vgg" or "digits_resnet")."""
    if name not in TRAINED:
        raise EdgecError(f"unknown trained model '{name}'; known: {', '.join(TRAINED)}")
    return onnx.load(str(TRAINED_DIR / f"{name}.onnx"))


def test_split() -> tuple[np.ndarray, np.ndarray]:
    """(images uint8 [360, 32, 32], labels int64 [360]): the held-out split the recorded
    accuracies were measured on."""
    with np.load(TEST_SPLIT) as data:
        return data["images"], data["labels"]


def upsample(digit: np.ndarray) -> np.ndarray:
    """One 8×8 sklearn digit (values 0..16) as the 32×32 uint8 image the models see:
    scaled to 0..255, rounded, and resized bilinearly by Pillow."""
    from PIL import Image

    a = np.round(np.asarray(digit, dtype=np.float64) * 255 / 16).astype(np.uint8)
    return np.asarray(Image.fromarray(a, "L").resize((32, 32), Image.BILINEAR))


def model_inputs(images: np.ndarray) -> np.ndarray:
    """float32 [N, 1, 32, 32] model inputs from uint8 [N, 32, 32] images, by PREPROCESS."""
    x = np.asarray(images, dtype=np.float32) * np.float32(PREPROCESS["scale"])
    x = (x - np.float32(PREPROCESS["mean"][0])) / np.float32(PREPROCESS["std"][0])
    return x[:, None, :, :].astype(np.float32)


def export_data(folder: str | Path) -> Path:
    """Write the test split as an ImageNet-layout folder, `folder/<label>/<index:04d>.png`
    (8-bit grayscale, lossless: decoding gives back the stored pixels), and return it.

    Refuses an existing non-empty folder rather than mixing its files into the split; the
    folder appears complete or not at all (written beside it, renamed at the end).
    """
    from PIL import Image

    from edgec.fileio import atomic_dir

    folder = Path(folder)
    if folder.exists() and (not folder.is_dir() or any(folder.iterdir())):
        raise EdgecError(f"{folder} exists and is not an empty folder; choose a new one")
    images, labels = test_split()
    with atomic_dir(folder) as tmp:
        for index, (image, label) in enumerate(zip(images, labels)):
            (tmp / LABELS[label]).mkdir(exist_ok=True)
            Image.fromarray(image, "L").save(tmp / LABELS[label] / f"{index:04d}.png")
    return folder
