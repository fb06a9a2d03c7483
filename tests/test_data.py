"""The validation harness's data: Preprocess (JSON, flags, image -> array) and open_data over
image folders, .npz files and .npy folders, with the errors a user's data can cause. All data
is tiny and synthetic, written into tmp_path."""

from __future__ import annotations

import io
import json

import numpy as np
import onnx
import pytest
from PIL import Image

from edgec.errors import EdgecError
from edgec.harness import progress as progress_mod
from edgec.harness.data import open_data
from edgec.harness.preprocess import (
    Preprocess,
    default_for,
    from_json,
    from_model,
    load_spec,
    overrides,
)

GRAY = [{"name": "x", "shape": [1, 1, 4, 4], "dtype": "float32"}]
RGB = [{"name": "x", "shape": [1, 3, 4, 4], "dtype": "float32"}]


def pattern(h: int, w: int, channels: int = 3, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (h, w, channels), dtype=np.uint8)


def save(path, pixels: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    mode = "L" if pixels.shape[-1] == 1 else "RGB"
    Image.fromarray(pixels[..., 0] if mode == "L" else pixels, mode).save(path)


def errors(fn, *args, **kwargs) -> str:
    with pytest.raises(EdgecError) as info:
        fn(*args, **kwargs)
    return str(info.value)


# --- Preprocess -------------------------------------------------------------------------

def test_json_round_trip_and_the_documented_form():
    doc = {"resize": [32, 32], "center_crop": None, "scale": 0.00392156862745098,
           "mean": [0.5], "std": [0.5], "color": "gray", "layout": "nchw", "dtype": "float32"}
    pre = Preprocess.from_json(doc)
    assert pre.resize == (32, 32) and pre.mean == (0.5,) and pre.color == "gray"
    assert pre.to_json() == doc
    assert from_json({"resize": 256, "center_crop": [224, 224]}).to_json()["resize"] == 256
    assert json.loads(json.dumps(pre.to_json())) == doc
    assert "unknown keys bogus" in errors(Preprocess.from_json, {"bogus": 1, "color": "rgb"})


def test_from_model_and_load_spec(tmp_path):
    model = onnx.ModelProto()
    assert from_model(model) is None
    onnx.helper.set_model_props(model, {"edgec.preprocess": json.dumps({"color": "bgr"})})
    assert from_model(model) == Preprocess(color="bgr")
    onnx.helper.set_model_props(model, {"edgec.preprocess": "{not json"})
    assert "edgec.preprocess is not valid JSON" in errors(from_model, model)
    spec = tmp_path / "pre.json"
    spec.write_text(json.dumps({"resize": 8, "layout": "nhwc"}))
    assert load_spec(spec) == Preprocess(resize=8, layout="nhwc")
    assert "cannot read preprocess spec" in errors(load_spec, tmp_path / "none.json")


@pytest.mark.parametrize("kwargs, fragment", [
    ({"color": "rgba"}, "color is 'rgba'; want one of rgb, bgr, gray"),
    ({"layout": "chw"}, "layout is 'chw'"),
    ({"dtype": "int32"}, "dtype is 'int32'"),
    ({"std": (0.5, 0.0, 0.5)}, "std has a 0"),
    ({"mean": (0.1, 0.2)}, "mean has 2 values; color rgb has 3 channels"),
    ({"mean": (0.1, 0.2, 0.3), "color": "gray"}, "mean has 3 values; color gray has 1"),
    ({"dtype": "uint8", "mean": (0.5,)}, "dtype uint8 feeds raw pixels"),
    ({"resize": (0, 4)}, "resize is (0, 4)"),
    ({"scale": -1.0}, "scale is -1.0"),
])
def test_bad_settings_are_one_line_errors(kwargs, fragment):
    assert fragment in errors(Preprocess, **kwargs)


def test_flag_overrides():
    got = overrides(resize="256", center_crop="224", scale="0.0039",
                    mean="0.485,0.456,0.406", std="0.229,0.224,0.225", color="BGR",
                    layout="nhwc", dtype="float32")
    assert got == {"resize": 256, "center_crop": (224, 224), "scale": 0.0039,
                   "mean": (0.485, 0.456, 0.406), "std": (0.229, 0.224, 0.225),
                   "color": "bgr", "layout": "nhwc", "dtype": "float32"}
    assert overrides() == {}
    assert overrides(resize="240x320", scale="1/255") == {"resize": (240, 320),
                                                          "scale": 1 / 255}
    assert "--mean: '0.4x' is not a number" in errors(overrides, mean="0.1,0.4x,0.2")
    assert "--resize: 'big' is not a size" in errors(overrides, resize="big")
    pre = Preprocess().with_overrides(overrides(color="gray", mean="0.5", std="0.5"))
    assert (pre.color, pre.mean, pre.std) == ("gray", (0.5,), (0.5,))
    raw = Preprocess(mean=(0.5,)).with_overrides({"dtype": "uint8"})
    assert (raw.scale, raw.mean, raw.std) == (1.0, (0.0,), (1.0,))
    assert "unknown preprocess settings size" in errors(Preprocess().with_overrides,
                                                        {"size": 3})


def test_apply_scale_mean_std_nchw():
    pixels = pattern(4, 4)
    pre = Preprocess(mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225))
    got = pre.apply(Image.fromarray(pixels), [1, 3, 4, 4])
    want = ((pixels / 255.0 - [0.485, 0.456, 0.406]) / [0.229, 0.224, 0.225]).transpose(2, 0, 1)
    assert got.shape == (3, 4, 4) and got.dtype == np.float32
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_apply_bgr_nhwc_gray_and_raw():
    pixels = pattern(4, 4)
    image = Image.fromarray(pixels)
    rgb = Preprocess(layout="nhwc").apply(image, [1, 4, 4, 3])
    bgr = Preprocess(color="bgr", layout="nhwc").apply(image, [1, 4, 4, 3])
    assert rgb.shape == (4, 4, 3)
    np.testing.assert_array_equal(bgr, rgb[..., ::-1])
    np.testing.assert_allclose(rgb, pixels / 255.0, rtol=1e-6)
    gray = Preprocess(color="gray", mean=(0.5,), std=(0.5,)).apply(image, [1, 1, 4, 4])
    want = (np.asarray(image.convert("L")) / 255.0 - 0.5) / 0.5
    np.testing.assert_allclose(gray[0], want, rtol=1e-5, atol=1e-6)
    raw = Preprocess(dtype="uint8").apply(image, [1, 3, 4, 4])
    np.testing.assert_array_equal(raw, pixels.transpose(2, 0, 1))
    signed = Preprocess(dtype="int8", layout="nhwc").apply(image, [1, 4, 4, 3])
    np.testing.assert_array_equal(signed, (pixels.astype(int) - 128).astype(np.int8))


def test_apply_resize_shorter_side_then_center_crop():
    pixels = pattern(6, 10)  # h=6, w=10: resize 6 keeps the size, the crop picks the middle
    got = Preprocess(resize=6, center_crop=(4, 4), layout="nhwc", scale=1.0).apply(
        Image.fromarray(pixels), [1, 4, 4, 3])
    np.testing.assert_array_equal(got, pixels[1:5, 3:7])
    flat = np.full((10, 20, 3), 200, np.uint8)  # shorter side 10 -> 5, so 10 wide, crop 4x4
    got = Preprocess(resize=5, center_crop=(4, 4), scale=1.0).apply(
        Image.fromarray(flat), [1, 3, 4, 4])
    np.testing.assert_array_equal(got, np.full((3, 4, 4), 200.0))
    # resize None, no crop: straight to the model's H x W
    got = Preprocess(scale=1.0).apply(Image.fromarray(flat), [1, 3, 5, 7])
    np.testing.assert_array_equal(got, np.full((3, 5, 7), 200.0))


def test_apply_errors_name_the_fix():
    image = Image.fromarray(pattern(8, 8))
    assert "preprocessed image is 5x5, the model takes 4x4; set --resize/--center-crop" in \
        errors(Preprocess(center_crop=(5, 5)).apply, image, [1, 3, 4, 4])
    assert "color gray gives 1; set --color rgb or bgr" in \
        errors(Preprocess(color="gray").apply, image, [1, 3, 4, 4])
    assert "set --layout nhwc" in errors(Preprocess().apply, image, [1, 4, 4, 3])
    assert "smaller than the center crop 16x16" in \
        errors(Preprocess(center_crop=(16, 16)).apply, image, [1, 3, 16, 16])
    assert default_for([1, 4, 4, 1], "uint8") == Preprocess(color="gray", layout="nhwc",
                                                            dtype="uint8")


# --- image folders ----------------------------------------------------------------------

def test_image_folder_integer_classes_png_jpeg_bmp(tmp_path):
    data = tmp_path / "imgs"
    values = {"2": 10, "10": 200}
    for name, value in values.items():
        for i, ext in enumerate(["png", "JPG", "bmp"]):
            save(data / name / f"img{i}.{ext}", np.full((4, 4, 1), value, np.uint8))
    (data / "10" / "notes.txt").write_text("not an image")
    (data / ".DS_Store").write_text("hidden")
    (data / "README").write_text("beside the class folders")
    pre = Preprocess(color="gray", mean=(0.5,), std=(0.5,))
    ds = open_data(data, GRAY, pre, num_classes=11)
    assert ds.count == 6 and ds.classes == ["2", "10"]
    np.testing.assert_array_equal(ds.labels, [2, 2, 2, 10, 10, 10])
    assert ds.source == f"6 images in 2 classes from {data} (2 other files ignored)"
    feeds, labels = next(ds.batches(64))
    assert len(feeds) == 6 and feeds[0]["x"].shape == (1, 1, 4, 4)
    for feed, label in zip(feeds, labels):
        want = (values[str(label)] / 255.0 - 0.5) / 0.5
        np.testing.assert_allclose(feed["x"], np.full((1, 1, 4, 4), want), atol=0.02)


def test_image_folder_named_classes_and_flat(tmp_path):
    for cls in ["dog", "cat", "zebra"]:
        save(tmp_path / "named" / cls / "a.png", pattern(4, 4))
    ds = open_data(tmp_path / "named", RGB)
    assert ds.classes == ["cat", "dog", "zebra"]
    np.testing.assert_array_equal(ds.labels, [0, 1, 2])
    assert ds.labels.dtype == np.int64
    for i in range(2):
        save(tmp_path / "flat" / f"{i}.png", pattern(4, 4, seed=i))
    ds = open_data(tmp_path / "flat", RGB)
    assert ds.labels is None and ds.classes is None
    assert ds.source == f"2 unlabeled images from {tmp_path / 'flat'}"
    feeds, labels = next(ds.batches())
    assert labels is None
    np.testing.assert_allclose(feeds[1]["x"][0], pattern(4, 4, seed=1).transpose(2, 0, 1)
                               / 255.0, rtol=1e-6)


def test_images_stream_one_batch_at_a_time(tmp_path):
    for i in range(7):
        save(tmp_path / "d" / f"{i}.png", pattern(4, 4, seed=i))
    (tmp_path / "d" / "5.png").write_bytes(b"\x89PNG not really")  # read only in batch 2
    ds = open_data(tmp_path / "d", RGB)
    it = ds.batches(3)
    feeds, _ = next(it)
    assert len(feeds) == 3
    np.testing.assert_allclose(feeds[2]["x"][0], pattern(4, 4, seed=2).transpose(2, 0, 1)
                               / 255.0, rtol=1e-6)
    message = errors(next, it)
    assert "cannot read image" in message and "5.png" in message
    (tmp_path / "d" / "5.png").unlink()
    save(tmp_path / "d" / "7.png", pattern(4, 4))
    assert [len(f) for f, _ in open_data(tmp_path / "d", RGB).batches(3)] == [3, 3, 1]


def test_image_folder_errors(tmp_path):
    save(tmp_path / "d" / "12" / "a.png", pattern(4, 4))
    save(tmp_path / "d" / "3" / "a.png", pattern(4, 4))
    assert errors(open_data, tmp_path / "d", RGB, num_classes=10) == \
        "label 12 in class folder '12' is out of range for a model with 10 classes"
    assert "color rgb gives 3; set --color gray" in errors(open_data, tmp_path / "d", GRAY,
                                                           Preprocess())
    assert "preprocess dtype is float32, the model's input takes uint8; set --dtype uint8" in \
        errors(open_data, tmp_path / "d", [dict(RGB[0], dtype="uint8")], Preprocess())
    two = [RGB[0], dict(RGB[0], name="y")]
    assert "takes 2 (x, y): use an .npz file" in errors(open_data, tmp_path / "d", two)
    save(tmp_path / "d" / "loose.png", pattern(4, 4))
    assert "both class folders and samples outside them" in errors(open_data, tmp_path / "d",
                                                                  RGB)
    (tmp_path / "empty").mkdir()
    assert "no images or .npy files in" in errors(open_data, tmp_path / "empty", RGB)
    assert "does not exist" in errors(open_data, tmp_path / "nope", RGB)
    (tmp_path / "data.csv").write_text("1,2")
    assert "is not a folder or an .npz file" in errors(open_data, tmp_path / "data.csv", RGB)
    save(tmp_path / "mixed" / "a.png", pattern(4, 4))
    np.save(tmp_path / "mixed" / "b.npy", np.zeros((3, 4, 4), np.float32))
    assert "mixes images (a.png) and .npy files (b.npy)" in errors(open_data,
                                                                   tmp_path / "mixed", RGB)
    save(tmp_path / "big" / "a.png", pattern(6, 6))
    message = errors(lambda: next(open_data(tmp_path / "big", RGB,
                                            Preprocess(center_crop=(5, 5))).batches()))
    assert "a.png: preprocessed image is 5x5, the model takes 4x4" in message


# --- .npz -------------------------------------------------------------------------------

def test_npz_two_inputs_labels_and_full_shape_arrays(tmp_path):
    inputs = [{"name": "a", "shape": [1, 3], "dtype": "float32"},
              {"name": "b", "shape": [1, 2, 2], "dtype": "int64"}]
    a = np.arange(7 * 3, dtype=np.float32).reshape(7, 3)
    b = np.arange(7 * 4, dtype=np.int64).reshape(7, 1, 2, 2)  # [N, *full shape]
    np.savez(tmp_path / "d.npz", a=a, b=b, labels=np.arange(7) % 3, extra=np.zeros(2))
    ds = open_data(tmp_path / "d.npz", inputs, num_classes=3)
    assert ds.count == 7 and ds.source == f"7 labeled samples from {tmp_path / 'd.npz'}"
    got = list(ds.batches(3))
    assert [len(f) for f, _ in got] == [3, 3, 1]
    feeds, labels = got[1]
    np.testing.assert_array_equal(labels, [0, 1, 2])
    assert feeds[0]["a"].shape == (1, 3) and feeds[0]["b"].shape == (1, 2, 2)
    np.testing.assert_array_equal(feeds[1]["a"][0], a[4])
    np.testing.assert_array_equal(feeds[1]["b"], b[4])
    assert feeds[1]["b"].dtype == np.int64


def test_npz_model_batch_dim_groups_samples(tmp_path):
    inputs = [{"name": "x", "shape": [2, 3], "dtype": "float32"}]
    x = np.arange(6 * 3, dtype=np.float32).reshape(6, 3)
    np.savez(tmp_path / "d.npz", x=x, labels=np.arange(6))
    ds = open_data(tmp_path / "d.npz", inputs)
    batches = list(ds.batches(5))  # rounded down to 4 samples: two feeds of 2
    assert [len(f) for f, _ in batches] == [2, 1]
    np.testing.assert_array_equal(batches[0][0][1]["x"], x[2:4])
    np.testing.assert_array_equal(batches[1][1], [4, 5])
    np.savez(tmp_path / "odd.npz", x=x[:5])
    assert "the model takes batches of 2 samples" in errors(open_data, tmp_path / "odd.npz",
                                                            inputs)


@pytest.mark.parametrize("arrays, fragment", [
    ({"y": np.zeros((2, 3), np.float32)}, "has no array 'x' for the model's input of that "
                                          "name; it has: y"),
    ({"x": np.zeros((2, 3))}, "array 'x' in {p} is float64, the model's input 'x' takes "
                              "float32"),
    ({"x": np.zeros((2, 4), np.float32)}, "array 'x' in {p} is [2, 4]; the model's input "
                                          "takes [1, 3]"),
    ({"x": np.zeros((0, 3), np.float32)}, "holds zero samples"),
    ({"x": np.zeros((2, 3), np.float32), "labels": np.arange(3)},
     "'labels' in {p} has shape [3]; want [2]"),
    ({"x": np.zeros((2, 3), np.float32), "labels": np.array([0.0, 1.5])},
     "are float64, not integers (sample 1: "),
    ({"x": np.zeros((2, 3), np.float32), "labels": np.array([3, 12])},
     "label 12 (sample 1) in 'labels' in {p} is out of range for a model with 10 classes"),
])
def test_npz_errors(tmp_path, arrays, fragment):
    path = tmp_path / "d.npz"
    np.savez(path, **arrays)
    inputs = [{"name": "x", "shape": [1, 3], "dtype": "float32"}]
    assert fragment.format(p=path) in errors(open_data, path, inputs, num_classes=10)


def test_npz_whole_float_labels_and_corrupt_file(tmp_path):
    inputs = [{"name": "x", "shape": [1, 3], "dtype": "float32"}]
    np.savez_compressed(tmp_path / "d.npz", x=np.ones((2, 3), np.float32),
                        labels=np.array([1.0, 0.0]))
    np.testing.assert_array_equal(open_data(tmp_path / "d.npz", inputs).labels, [1, 0])
    (tmp_path / "bad.npz").write_bytes(b"not a zip")
    assert "cannot read" in errors(open_data, tmp_path / "bad.npz", inputs)


# --- .npy folders -----------------------------------------------------------------------

def test_npy_folder_classes_and_shapes(tmp_path):
    spec = [{"name": "x", "shape": [1, 2, 3], "dtype": "float32"}]
    for cls in ["0", "1"]:
        (tmp_path / "d" / cls).mkdir(parents=True)
        for i in range(2):
            sample = np.full((2, 3), int(cls) * 10 + i, np.float32)
            np.save(tmp_path / "d" / cls / f"{i}.npy", sample[None] if i else sample)
    ds = open_data(tmp_path / "d", spec)
    assert ds.source == f"4 .npy samples in 2 classes from {tmp_path / 'd'}"
    feeds, labels = next(ds.batches())
    np.testing.assert_array_equal(labels, [0, 0, 1, 1])
    assert [f["x"][0, 0, 0] for f in feeds] == [0, 1, 10, 11]
    assert feeds[3]["x"].shape == (1, 2, 3)


def test_npy_folder_errors(tmp_path):
    spec = [{"name": "x", "shape": [1, 2, 3], "dtype": "float32"}]
    (tmp_path / "d").mkdir()
    np.save(tmp_path / "d" / "a.npy", np.zeros((2, 3), np.float32))
    np.save(tmp_path / "d" / "b.npy", np.zeros((3, 2), np.float32))
    ds = open_data(tmp_path / "d", spec)
    message = errors(lambda: list(ds.batches()))
    assert "b.npy is float32 [3, 2]; the model's input 'x' takes float32 [2, 3]" in message
    np.save(tmp_path / "d" / "a.npy", np.zeros((2, 3)))
    assert "a.npy is float64 [2, 3]" in errors(open_data, tmp_path / "d", spec)


# --- progress ---------------------------------------------------------------------------

def test_progress_is_silent_unless_asked_and_ends_with_a_newline(monkeypatch):
    monkeypatch.delenv("EDGEC_PROGRESS", raising=False)
    out = io.StringIO()
    assert list(progress_mod.progress(range(3), 3, "x", stream=out)) == [0, 1, 2]
    assert out.getvalue() == ""
    monkeypatch.setenv("EDGEC_PROGRESS", "1")
    monkeypatch.setattr(progress_mod, "DELAY_S", 0.0)
    assert list(progress_mod.progress(range(3), 3, "validate", stream=out)) == [0, 1, 2]
    text = out.getvalue()
    assert text.startswith("\rvalidate [") and text.endswith("3/3 100% 0s\n")
    out = io.StringIO()
    for i in progress_mod.progress(range(10), 10, "early", stream=out):
        if i == 1:
            break
    assert out.getvalue().endswith("1/10  10% 0s\n")
