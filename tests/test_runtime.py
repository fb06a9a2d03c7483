"""Runtime: loading an artifact, calling it, `edgec run`, and the refusals."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from edgec import models, runtime
from edgec.errors import EdgecError

from conftest import foreign_arch, ort_run


@pytest.fixture
def lenet(artifacts, tmp_path):
    """A private copy of the LeNet-5 host artifact (tests below tamper with it)."""
    dst = tmp_path / "lenet"
    shutil.copytree(artifacts("lenet5", "host"), dst)
    return dst


def test_call_positional_and_named(lenet):
    model = runtime.load(lenet, threads=1)
    x = runtime.random_inputs(model.inputs, seed=5)["input"]
    a = model(x)["output"]
    b = model(input=x)["output"]
    np.testing.assert_array_equal(a, b)
    assert a.shape == (1, 10)


def test_outputs_are_copies(lenet):
    """Outputs come back through numpy's DLPack view of the VM's tensor, copied: a later call
    (whose output may reuse the same storage) leaves an earlier result as it was."""
    model = runtime.load(lenet, threads=1)
    x0, x1 = (runtime.random_inputs(model.inputs, seed=s)["input"] for s in (1, 2))
    first = model(x0)["output"]
    kept = first.copy()
    second = model(x1)["output"]
    np.testing.assert_array_equal(first, kept)
    assert not np.array_equal(first, second) and first.flags.owndata


def _placed(x: np.ndarray, offset: int, writeable: bool = True) -> np.ndarray:
    """A copy of `x` whose data starts `offset` bytes past a 64-byte boundary."""
    raw = np.empty(x.nbytes + 128, np.uint8)
    start = (-raw.ctypes.data) % 64 + offset
    out = raw[start:start + x.nbytes].view(x.dtype).reshape(x.shape)
    out[...] = x
    out.flags.writeable = writeable
    return out


def _record_by_reference(monkeypatch) -> list[int]:
    """Each input the runtime passes by reference (DLPack), as its address mod 64."""
    import tvm_ffi

    seen: list[int] = []
    from_dlpack = tvm_ffi.from_dlpack
    monkeypatch.setattr(tvm_ffi, "from_dlpack",
                        lambda a, **kw: seen.append(a.ctypes.data % 64) or from_dlpack(a, **kw))
    return seen


def test_inputs_anywhere_in_memory_give_onnxruntime_answers(lenet, monkeypatch):
    """The artifact's kernels take the input at any float32 address (tir_level/unaligned_inputs.py),
    so writeable arrays are passed by reference wherever they lie; read-only ones are copied into a
    tensor kept per input. Each placement, and a new input after an old one, must still give
    onnxruntime's answer."""
    manifest = json.loads((lenet / "manifest.json").read_text())
    assert manifest["codegen"]["input_alignment"] == [4]
    by_reference = _record_by_reference(monkeypatch)
    model = runtime.load(lenet, threads=1)
    src = manifest["source"]["path"]
    for seed, (offset, writeable) in enumerate([(0, True), (4, True), (0, False), (16, True),
                                                (4, True), (0, True)]):
        x = runtime.random_inputs(model.inputs, seed=seed)["input"]
        placed = _placed(x, offset, writeable)
        got = model(input=placed)["output"]
        np.testing.assert_allclose(got, ort_run(src, {"input": x})[0], rtol=1e-4, atol=1e-5)
        np.testing.assert_array_equal(placed, x)  # the caller's array is left as it was
    assert by_reference == [0, 4, 16, 4, 0]  # every writeable array, none copied
    # a strided view is made contiguous before either path
    x = runtime.random_inputs(model.inputs, seed=9)["input"]
    wide = np.repeat(x, 2, axis=-1)[..., ::2]
    np.testing.assert_allclose(model(input=wide)["output"], ort_run(src, {"input": x})[0],
                               rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("bad, match", [
    ({"image": np.zeros((1, 1, 32, 32), np.float32)}, "unknown input 'image'"),
    ({"input": np.zeros((1, 1, 28, 28), np.float32)}, r"shape \[1, 1, 28, 28\]"),
    ({"input": np.zeros((1, 1, 32, 32), np.float64)}, "dtype float64"),
    ({}, "missing input 'input'"),
])
def test_wrong_inputs(lenet, bad, match):
    model = runtime.load(lenet)
    with pytest.raises(EdgecError, match=match):
        model(**bad)


def test_artifacts_without_input_alignment_take_64_byte_aligned_inputs(lenet, monkeypatch):
    """An artifact whose manifest says nothing of input alignment (compiled before it was
    recorded) gets only 64-byte-aligned arrays by reference; others are copied."""
    manifest = json.loads((lenet / "manifest.json").read_text())
    del manifest["codegen"]["input_alignment"]
    (lenet / "manifest.json").write_text(json.dumps(manifest))
    by_reference = _record_by_reference(monkeypatch)
    model = runtime.load(lenet, threads=1)
    for seed, offset in enumerate([0, 4, 32]):
        x = runtime.random_inputs(model.inputs, seed=seed)["input"]
        got = model(input=_placed(x, offset))["output"]
        np.testing.assert_allclose(got, ort_run(manifest["source"]["path"], {"input": x})[0],
                                   rtol=1e-4, atol=1e-5)
    assert by_reference == [0]


def test_tampered_library_refused(lenet, cli):
    with open(lenet / "model.so", "ab") as f:
        f.write(b"\0")
    code, _, err = cli("run", lenet)
    assert code == 2 and "does not match its manifest" in err


def test_foreign_arch_refused(lenet, cli):
    from edgec.targets import host_arch

    manifest = json.loads((lenet / "manifest.json").read_text())
    manifest["target"]["arch"] = foreign_arch()
    (lenet / "manifest.json").write_text(json.dumps(manifest))
    code, _, err = cli("run", lenet)
    assert code == 2
    assert f"built for {foreign_arch()}" in err and f"this machine is {host_arch()}" in err


def test_missing_cpu_feature_refused(lenet):
    manifest = json.loads((lenet / "manifest.json").read_text())
    manifest["target"]["cpu_flags"] = ["amx_tile_imaginary"]
    (lenet / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(EdgecError, match="CPU features this CPU lacks"):
        runtime.load(lenet)


def test_not_an_artifact(tmp_path, cli):
    code, _, err = cli("run", tmp_path)
    assert code == 2 and "not an edgec artifact" in err


def test_edgec_run_with_npy_input_writes_npz(lenet, tmp_path, cli):
    x = np.random.default_rng(9).standard_normal((1, 1, 32, 32)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    out = tmp_path / "res" / "out.npz"
    code, stdout, err = cli("run", lenet, "--input", f"input={tmp_path / 'x.npy'}", "-o", out)
    assert code == 0, err
    assert "output: shape [1, 10] float32" in stdout
    got = np.load(out)["output"]
    src = tmp_path / "lenet5.onnx"
    models.export("lenet5", src)
    ref = ort_run(src, {"input": x})[0]
    assert np.abs(got - ref).max() <= 1e-4 * np.abs(ref).max()


def test_edgec_run_seeded_random_input_is_deterministic(lenet, cli):
    _, first, _ = cli("run", lenet, "--seed", "3")
    _, second, _ = cli("run", lenet, "--seed", "3")
    assert first == second and "argmax" in first


def test_edgec_run_bad_input_file(lenet, tmp_path, cli):
    code, _, err = cli("run", lenet, "--input", f"input={tmp_path / 'none.npy'}")
    assert code == 2 and "cannot read input 'input'" in err


def test_console_script_in_a_fresh_process(artifacts, tmp_path):
    """The installed `edgec` entry point, in its own process: nothing imported beforehand."""
    import subprocess
    import sys
    from pathlib import Path

    exe = Path(sys.executable).with_name("edgec")
    done = subprocess.run([str(exe), "run", str(artifacts("lenet5", "host")), "-o",
                           str(tmp_path / "o.npz")], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "output: shape [1, 10] float32" in done.stdout
    bad = subprocess.run([str(exe), "run", str(tmp_path / "missing")], capture_output=True,
                         text=True, timeout=120)
    assert bad.returncode == 2
    assert bad.stderr.strip() == f"edgec: error: artifact folder '{tmp_path / 'missing'}' not found"


def test_tvm_thread_pool_gets_every_core():
    """TVM would size its pool at half the cores, once; importing edgec must prevent that."""
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k != "TVM_NUM_THREADS"}
    code = ("import edgec.targets, tvm, tvm_ffi; "
            "print(tvm_ffi.get_global_func('runtime.NumThreads')())")
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    assert int(done.stdout.strip()) == os.cpu_count()


def test_manifest_and_runtime_carry_the_device(lenet):
    """The artifact says which device its kernels run on; the runtime opens that one."""
    assert json.loads((lenet / "manifest.json").read_text())["target"]["device"] == "cpu"
    assert runtime.load(lenet, threads=1).device == "cpu"


@pytest.mark.parametrize("device, match", [("vulkan", "does not know"),
                                           ("cuda", "no cuda device")])
def test_device_this_machine_lacks_refused(lenet, device, match):
    from edgec import targets

    if device == "cuda" and targets.device_present("cuda"):
        pytest.skip("this machine has a CUDA GPU")
    manifest = json.loads((lenet / "manifest.json").read_text())
    manifest["target"]["device"] = device
    (lenet / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(EdgecError, match=match):
        runtime.load(lenet)
