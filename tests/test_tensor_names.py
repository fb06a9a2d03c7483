"""Tensor names that are not file names ("save_infer_model/scale_0.tmp_1" from Paddle, "x:0",
spaces, unicode, '=') round-trip through a bundle's files, run.sh and `edgec run`.

Reference: onnxruntime on the original model, max|diff| <= 1e-4 * max|ref|.
"""

from __future__ import annotations

import subprocess

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from edgec.runtime.artifact import file_stem, npy_file
from edgec.runtime.device import run_bundle

from conftest import ort_run, save

IMAGE = "image/in:0 ü=1"
OUTPUTS = ["save_infer_model/scale_0.tmp_1", ". x:0 é/" * 30, "file"]
SHAPE = [1, 3, 4, 4]


def _odd_names_model() -> onnx.ModelProto:
    """One input and three outputs whose names are not file names (one over 200 bytes)."""
    w = numpy_helper.from_array(np.linspace(-2, 2, 3, dtype=np.float32).reshape(1, 3, 1, 1),
                                "scale/w:0")
    nodes = [helper.make_node("Relu", [IMAGE], [OUTPUTS[0]]),
             helper.make_node("Sigmoid", [IMAGE], [OUTPUTS[1]]),
             helper.make_node("Mul", [IMAGE, "scale/w:0"], [OUTPUTS[2]])]
    graph = helper.make_graph(
        nodes, "odd", [helper.make_tensor_value_info(IMAGE, TensorProto.FLOAT, SHAPE)],
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, SHAPE) for n in OUTPUTS], [w])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model, full_check=True)
    return model


@pytest.fixture(scope="module")
def odd_bundle(tmp_path_factory):
    """(source .onnx, host bundle folder) of _odd_names_model."""
    import edgec

    root = tmp_path_factory.mktemp("odd")
    src = save(_odd_names_model(), root / "odd.onnx")
    edgec.compile(src, output=root / "b", target="host", bundle=True)
    return src, root / "b"


def _feed(seed: int) -> dict[str, np.ndarray]:
    return {IMAGE: np.random.default_rng(seed).standard_normal(SHAPE).astype(np.float32)}


def _matches(outputs: dict[str, np.ndarray], src, feed: dict[str, np.ndarray]) -> None:
    assert list(outputs) == OUTPUTS
    for got, want in zip(outputs.values(), ort_run(src, feed)):
        assert got.shape == want.shape and got.dtype == want.dtype
        assert np.abs(got - want).max() <= 1e-4 * np.abs(want).max()


@pytest.mark.parametrize("name", ["input", "save_infer_model/scale_0.tmp_1", "x:0", "a b",
                                  "é", ".", "..", ".x", "%2F", "/", "", "a=b", "~" * 300,
                                  "é" * 100, "é" * 100 + "!"])
def test_file_stem_is_one_safe_path_component(name):
    stem = file_stem(name)
    assert stem and len(stem.encode()) <= 200 and not stem.startswith(".")
    assert set(stem) <= set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
                            "0123456789._-%~")
    assert npy_file(name) == stem + ".npy"
    if name.replace("_", "a").replace("-", "a").isalnum() and name.isascii():
        assert stem == name  # plain names keep their file names


def test_file_stems_of_distinct_names_differ():
    names = ["a/b", "a%2Fb", "a_b", ".a", "%2Ea", "", "%", "é" * 100, "é" * 100 + "!",
             "é" * 99 + "e", "~" * 300, "~" * 301]
    assert len({file_stem(n) for n in names}) == len(names)


def test_manifest_names_each_tensor_file(odd_bundle):
    import json

    _, bundle = odd_bundle
    manifest = json.loads((bundle / "manifest.json").read_text())
    assert [s["name"] for s in manifest["outputs"]] == OUTPUTS
    assert [s["file"] for s in manifest["outputs"]] == [npy_file(n) for n in OUTPUTS]
    assert manifest["outputs"][0]["file"] == "save_infer_model%2Fscale_0.tmp_1.npy"
    assert manifest["inputs"][0]["file"] == "image%2Fin%3A0%20%C3%BC%3D1.npy"


def test_bundle_runs_with_odd_names(odd_bundle):
    """run_bundle on this machine (the C++ runner), twice with different inputs."""
    src, bundle = odd_bundle
    for seed in (1, 2):
        feed = _feed(seed)
        _matches(run_bundle(bundle, device="local", feed=feed).outputs, src, feed)


def test_run_sh_takes_a_name_or_its_stem_and_writes_stems(odd_bundle, tmp_path):
    src, bundle = odd_bundle
    feed = _feed(3)
    np.save(tmp_path / "x.npy", feed[IMAGE])
    for key in ("image/in:0 ü", file_stem(IMAGE)):  # the raw name splits at its '='
        out = tmp_path / f"out-{len(key)}"
        out.mkdir()
        done = subprocess.run([str(bundle / "run.sh"), "--input", f"{key}={tmp_path / 'x.npy'}",
                               "--output-dir", str(out)], capture_output=True, text=True,
                              timeout=120)
        if key == file_stem(IMAGE):
            assert done.returncode == 0, done.stderr
            assert sorted(p.name for p in out.iterdir()) == sorted(npy_file(n) for n in OUTPUTS)
            _matches({n: np.load(out / npy_file(n)) for n in OUTPUTS}, src, feed)
        else:
            assert done.returncode == 2
            assert "unknown input 'image/in:0 ü'" in done.stderr


@pytest.mark.parametrize("device", [None, "local"])
def test_edgec_run_maps_files_back_to_names(odd_bundle, tmp_path, cli, device):
    """`edgec run` takes the input by its stem and writes the .npz keyed by output name."""
    src, bundle = odd_bundle
    feed = _feed(4)
    np.save(tmp_path / "x.npy", feed[IMAGE])
    args = ["--device", device] if device else []
    code, stdout, err = cli("run", bundle, "--input", f"{file_stem(IMAGE)}={tmp_path / 'x.npy'}",
                            "-o", tmp_path / "o.npz", *args)
    assert code == 0, err
    assert "save_infer_model/scale_0.tmp_1: shape [1, 3, 4, 4] float32" in stdout
    with np.load(tmp_path / "o.npz") as npz:
        _matches({n: npz[n] for n in OUTPUTS}, src, feed)
    code, _, err = cli("run", bundle, "--input", f"nope={tmp_path / 'x.npy'}", *args)
    assert code == 2 and err.strip().startswith("edgec: error: unknown input 'nope'")
