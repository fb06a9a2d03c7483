"""Deploy bundles: the C++ runner under qemu-aarch64, run.sh from anywhere, ssh on loopback.

Reference: onnxruntime on the original model, max|diff| <= 1e-4 * max|ref|.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from edgec import models, runtime
from edgec.errors import EdgecError
from edgec.runtime.device import run_bundle, run_bundle_many
from edgec.targets import host_arch

from conftest import elf_machine, ort_run, save

pytestmark = pytest.mark.skipif(shutil.which("qemu-aarch64") is None,
                                reason="qemu-user is not installed (./dev setup installs it)")

SLOW = {"alexnet", "resnet18", "vgg11", "mobilenet_v2"}
FAST_BOARDS = {"lenet5", "mobilenet_v3_small", "conv1d_timeseries"}
CASES = [pytest.param(name, target, marks=pytest.mark.slow)
         if name in SLOW or (target != "arm" and name not in FAST_BOARDS) else (name, target)
         for target in ("arm", "rpi4", "rpi5") for name in models.MODELS]


def _matches(outputs: dict[str, np.ndarray], ref: list[np.ndarray]) -> None:
    assert len(outputs) == len(ref)
    for got, want in zip(outputs.values(), ref):
        assert got.shape == want.shape and got.dtype == want.dtype
        assert np.abs(got - want).max() <= 1e-4 * np.abs(want).max()


@pytest.mark.parametrize("name, target", CASES)
def test_reference_model_runs_under_qemu(artifacts, tmp_path, name, target):
    bundle = artifacts(name, target, bundle=True)
    manifest = json.loads((bundle / "manifest.json").read_text())
    assert manifest["validation"]["ok"]
    if host_arch() != "aarch64":  # elsewhere validated under the target's emulator
        assert manifest["validation"]["device"].startswith("qemu")
    feed = runtime.random_inputs(manifest["inputs"], seed=4321)
    result = run_bundle(bundle, device="qemu", feed=feed)
    src = tmp_path / "m.onnx"
    models.export(name, src)
    _matches(result.outputs, ort_run(src, feed))
    assert result.emulated


def test_bundle_contents(artifacts):
    bundle = artifacts("lenet5", "rpi4", bundle=True)
    names = {p.relative_to(bundle).as_posix() for p in bundle.rglob("*") if p.is_file()}
    assert names == {"model.so", "model.onnx", "manifest.json", "edgec-run", "run.sh",
                     "edgec-rpc-server", "rpc.sh", "README.txt", "lib/libtvm_runtime.so",
                     "lib/libtvm_ffi.so"}
    for rel in ("model.so", "edgec-run", "edgec-rpc-server", "lib/libtvm_runtime.so",
                "lib/libtvm_ffi.so"):
        assert elf_machine(bundle / rel) == "aarch64", rel
    from edgec.runtime.artifact import sha256_file

    sums = json.loads((bundle / "manifest.json").read_text())["bundle"]["sha256"]
    assert sums["edgec-run"] == sha256_file(bundle / "edgec-run")
    assert sums["libtvm_runtime.so"] == sha256_file(bundle / "lib/libtvm_runtime.so")
    readme = (bundle / "README.txt").read_text()
    assert "no Python" in readme and "./run.sh" in readme and "glibc >= 2.28" in readme


def test_bundle_runs_from_any_directory(artifacts, tmp_path):
    bundle = artifacts("lenet5", "arm", bundle=True)
    moved = tmp_path / "elsewhere" / "b"
    shutil.copytree(bundle, moved)
    x = np.random.default_rng(2).standard_normal((1, 1, 32, 32)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    (tmp_path / "out").mkdir()
    done = subprocess.run([str(moved / "run.sh"), "--input", f"input={tmp_path / 'x.npy'}",
                           "--output-dir", str(tmp_path / "out"), "--repeat", "3"],
                          cwd="/", capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    stats = json.loads(done.stdout.strip().splitlines()[-1])
    assert stats["runs"] == 3 and stats["emulated"] is True and stats["median_ms"] > 0
    assert "latency is not device speed" in done.stderr
    src = tmp_path / "lenet5.onnx"
    models.export("lenet5", src)
    _matches({"output": np.load(tmp_path / "out" / "output.npy")}, ort_run(src, {"input": x}))


def _run_sh(bundle: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(bundle / "run.sh"), *args], capture_output=True, text=True,
                          timeout=300)


@pytest.mark.parametrize("case, match", [
    ("name", "unknown input 'image'; the model's inputs: input"),
    ("shape", "has shape [1, 1, 28, 28]; the model takes [1, 1, 32, 32]"),
    ("dtype", "has dtype <f8; the model takes float32 (<f4)"),
    ("missing", "cannot open"),
    ("not_npy", "is not a .npy file"),
    ("corrupt", "cannot load the model"),
])
def test_runner_errors(artifacts, tmp_path, case, match):
    bundle = tmp_path / "b"
    shutil.copytree(artifacts("lenet5", "arm", bundle=True), bundle)
    arrays = {"name": np.zeros((1, 1, 32, 32), np.float32),
              "shape": np.zeros((1, 1, 28, 28), np.float32),
              "dtype": np.zeros((1, 1, 32, 32), np.float64)}
    path = tmp_path / "x.npy"
    if case in arrays:
        np.save(path, arrays[case])
    elif case == "not_npy":
        path.write_text("hello")
    elif case == "corrupt":
        np.save(path, np.zeros((1, 1, 32, 32), np.float32))
        (bundle / "model.so").write_bytes(b"\x7fELF garbage")
    name = "image" if case == "name" else "input"
    done = _run_sh(bundle, "--input", f"{name}={path}")
    assert done.returncode == 2
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("edgec-run: error: ") and match in last, last


def _mixed_dtype_model() -> onnx.ModelProto:
    """Three inputs (uint8 image, int8 bias, float16 scale) and a float16 output."""
    nodes = [helper.make_node("Cast", ["img"], ["f"], to=TensorProto.FLOAT),
             helper.make_node("Cast", ["bias"], ["b"], to=TensorProto.FLOAT),
             helper.make_node("Cast", ["scale"], ["s"], to=TensorProto.FLOAT),
             helper.make_node("Add", ["f", "b"], ["fb"]),
             helper.make_node("Mul", ["fb", "s"], ["y32"]),
             helper.make_node("Cast", ["y32"], ["y"], to=TensorProto.FLOAT16)]
    graph = helper.make_graph(
        nodes, "mixed",
        [helper.make_tensor_value_info("img", TensorProto.UINT8, [1, 3, 4, 4]),
         helper.make_tensor_value_info("bias", TensorProto.INT8, [1, 3, 4, 4]),
         helper.make_tensor_value_info("scale", TensorProto.FLOAT16, [1, 3, 4, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT16, [1, 3, 4, 4])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


def test_runner_reads_and_writes_uint8_int8_float16(tmp_path):
    import edgec

    src = save(_mixed_dtype_model(), tmp_path / "mixed.onnx")
    edgec.compile(src, output=tmp_path / "b", target="arm", bundle=True)
    rng = np.random.default_rng(0)
    feed = {"img": rng.integers(0, 255, (1, 3, 4, 4)).astype(np.uint8),
            "bias": rng.integers(-128, 127, (1, 3, 4, 4)).astype(np.int8),
            "scale": rng.standard_normal((1, 3, 4, 4)).astype(np.float16)}
    result = run_bundle(tmp_path / "b", device="qemu", feed=feed)
    (want,) = ort_run(src, feed)
    got = result.outputs["y"]
    assert got.dtype == np.float16 and got.shape == want.shape
    np.testing.assert_array_equal(got, want)


def test_edgec_run_device_qemu_cli(artifacts, cli):
    code, out, err = cli("run", artifacts("lenet5", "rpi5", bundle=True), "--device", "qemu",
                         "--repeat", "3")
    assert code == 0, err
    assert "output: shape [1, 10] float32" in out
    assert "EMULATED under qemu, not device speed" in out


def test_device_needs_a_bundle(artifacts, cli):
    code, _, err = cli("run", artifacts("lenet5", "arm"), "--device", "qemu")
    assert code == 2 and "without a device runner" in err


def test_no_prebuilt_runtime_for_a_target_without_wheel_platform(cli, tmp_path):
    """A target file with no [deploy] wheel_platform (android-arm64 has one now: tests/
    test_android.py) gets no bundle, and nothing is written."""
    models.export("lenet5", tmp_path / "m.onnx")
    (tmp_path / "bare.toml").write_text(
        'arch = "aarch64"\n[tvm]\nkind = "llvm"\nmtriple = "aarch64-linux-gnu"\n'
        '[toolchain]\ncc = "aarch64-linux-gnu-g++"\n')
    code, _, err = cli("compile", tmp_path / "m.onnx", "--target", tmp_path / "bare.toml",
                       "--bundle", "-o", tmp_path / "out")
    assert code == 2 and "no prebuilt runtime" in err
    assert not (tmp_path / "out").exists()


def test_ssh_device_on_loopback(artifacts, ssh_device, tmp_path, cli):
    bundle = artifacts("mobilenet_v3_small", "rpi4", bundle=True)
    manifest = json.loads((bundle / "manifest.json").read_text())
    feed = runtime.random_inputs(manifest["inputs"], seed=99)
    result = run_bundle(bundle, device=ssh_device, feed=feed, repeat=2)
    src = tmp_path / "m.onnx"
    models.export("mobilenet_v3_small", src)
    _matches(result.outputs, ort_run(src, feed))
    native = host_arch() == "aarch64"  # the 'board' is this machine: run.sh emulates elsewhere
    assert result.emulated != native and result.latency["runs"] == 2
    code, out, err = cli("run", bundle, "--device", ssh_device, "--repeat", "2")
    assert code == 0, err
    assert ("EMULATED" in out) != native


def test_ssh_device_unreachable(artifacts, cli):
    code, _, err = cli("run", artifacts("lenet5", "arm", bundle=True), "--device",
                       "ssh://nobody@127.0.0.1:1")
    assert code == 2 and "ssh to nobody@127.0.0.1 failed" in err


def _seeded_feeds(bundle: Path, count: int) -> list[dict[str, np.ndarray]]:
    manifest = json.loads((bundle / "manifest.json").read_text())
    return [runtime.random_inputs(manifest["inputs"], seed=seed) for seed in range(count)]


@pytest.mark.parametrize("target, device", [("arm", "qemu"), ("host", "local")])
def test_run_bundle_many_matches_onnxruntime_per_feed(artifacts, tmp_path, target, device):
    """Five feeds in one runner process (--samples 5), then in chunks of two (three processes):
    each feed gets onnxruntime's outputs, chunked or not, and a one-sample run's bit for bit."""
    bundle = artifacts("lenet5", target, bundle=True)
    feeds = _seeded_feeds(bundle, 5)
    outs = run_bundle_many(bundle, device=device, feeds=feeds)
    src = tmp_path / "lenet5.onnx"
    models.export("lenet5", src)
    assert len(outs) == len(feeds)
    for feed, out in zip(feeds, outs):
        _matches(out, ort_run(src, feed))
    assert len({out["output"].tobytes() for out in outs}) == len(feeds)  # none repeats another
    chunked = run_bundle_many(bundle, device=device, feeds=feeds, chunk=2)
    alone = run_bundle(bundle, device=device, feed=feeds[3]).outputs
    for got, want in zip(chunked + [alone], outs + [outs[3]]):
        assert list(got) == list(want)
        for name in want:
            np.testing.assert_array_equal(got[name], want[name])


@pytest.mark.parametrize("shape, match", [
    ((4, 1, 1, 32, 32), "has shape [4, 1, 1, 32, 32]; with --samples 5 the model takes "
                        "[5, 1, 1, 32, 32] (5 samples of [1, 1, 32, 32])"),
    ((5, 1, 1, 28, 28), "has shape [5, 1, 1, 28, 28]; with --samples 5"),
    ((1, 1, 32, 32), "has shape [1, 1, 32, 32]; with --samples 5"),
])
def test_samples_with_a_wrongly_stacked_input(artifacts, shape, match):
    bundle = artifacts("lenet5", "arm", bundle=True)
    with pytest.raises(EdgecError) as err:
        run_bundle(bundle, device="qemu", feed={"input": np.zeros(shape, np.float32)}, samples=5)
    message = str(err.value)
    assert "\n" not in message and "input 'input'" in message and match in message, message


@pytest.mark.parametrize("bad, match", [
    (np.zeros((1, 1, 28, 28), np.float32),
     "feed 2: input 'input' is float32[1, 1, 28, 28]; the model takes float32[1, 1, 32, 32]"),
    (np.zeros((1, 1, 32, 32), np.float64),
     "feed 2: input 'input' is float64[1, 1, 32, 32]; the model takes float32[1, 1, 32, 32]"),
    (None, "feed 2 has no input 'input'"),
])
def test_run_bundle_many_names_the_bad_feed(artifacts, bad, match):
    bundle = artifacts("lenet5", "arm", bundle=True)
    feeds = _seeded_feeds(bundle, 4)
    feeds[2] = {} if bad is None else {"input": bad}
    with pytest.raises(EdgecError, match=re.escape(match)):
        run_bundle_many(bundle, device="qemu", feeds=feeds)


def test_runner_samples_flag(artifacts, tmp_path):
    """run.sh --samples 3 writes [3, *shape] outputs; --repeat times sample 0; bad uses fail."""
    bundle = artifacts("lenet5", "arm", bundle=True)
    x = np.random.default_rng(5).standard_normal((3, 1, 1, 32, 32)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    (tmp_path / "out").mkdir()
    done = _run_sh(bundle, "--input", f"input={tmp_path / 'x.npy'}", "--output-dir",
                   str(tmp_path / "out"), "--samples", "3", "--repeat", "2")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout.strip().splitlines()[-1])["runs"] == 2
    got = np.load(tmp_path / "out" / "output.npy")
    assert got.shape == (3, 1, 10)
    src = tmp_path / "lenet5.onnx"
    models.export("lenet5", src)
    for i in range(3):
        _matches({"output": got[i]}, ort_run(src, {"input": x[i]}))
    for args, match in [(["--samples", "0"], "--samples takes a count of 1 or more, got 0"),
                        (["--samples", "2x"], "--samples takes a count of 1 or more, got 2x"),
                        (["--samples", "2"], "--samples needs an --input file for each input")]:
        done = _run_sh(bundle, *args)
        assert done.returncode == 2 and done.stderr.strip().splitlines()[-1] == \
            f"edgec-run: error: {match}"
