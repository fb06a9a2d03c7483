"""Android phones without the NDK: android-arm64 builds with the Debian cross toolchain into a
self-contained bundle (glibc's loader and the C/C++ libraries in lib/, run.sh starting the
programs through it), proven under qemu-aarch64 with an EMPTY sysroot, and `edgec run
--device adb[://SERIAL]` through a fake adb that performs each call here (the 'phone's'
/data/local/tmp is a temporary folder; the bundle runs there under qemu).

Reference: onnxruntime on the original model, within compiler/tolerance.py's RTOL x max|ref|.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from edgec import targets
from edgec.compiler.tolerance import RTOL, tolerance
from edgec.errors import EdgecError
from edgec.runtime.device import run_bundle
from edgec.runtime.selfcontained import elf_files

from conftest import conv_relu_conv, elf_machine, ort_run

pytestmark = pytest.mark.skipif(
    shutil.which("qemu-aarch64") is None or shutil.which("aarch64-linux-gnu-g++") is None,
    reason="qemu-user and g++-aarch64-linux-gnu are needed (./dev setup installs them)")

X_SHAPE = [1, 16, 28, 28]  # conftest.conv_relu_conv's input
SERIAL = "FAKE123"
# what the bundle's programs need, at the least (computed from NEEDED entries, not listed)
SYSTEM_LIBS = {"ld-linux-aarch64.so.1", "libc.so.6", "libm.so.6", "libstdc++.so.6",
               "libgcc_s.so.1"}


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> Path:
    """Conv 3x3 + bias, ReLU, 1x1 conv: a tiny graph from onnx.helper (conftest)."""
    return conv_relu_conv(tmp_path_factory.mktemp("android") / "m.onnx")


@pytest.fixture(scope="module")
def bundle(model) -> Path:
    import edgec

    out = model.parent / "b"
    edgec.compile(model, output=out, target="android-arm64", bundle=True, latency=False)
    return out


@pytest.fixture
def empty_sysroot(tmp_path, monkeypatch) -> Path:
    """qemu's sysroot (QEMU_LD_PREFIX) an empty folder: only the bundle's files can load."""
    empty = tmp_path / "empty-sysroot"
    empty.mkdir()
    monkeypatch.setenv("QEMU_LD_PREFIX", str(empty))
    monkeypatch.delenv("EDGEC_EMULATOR", raising=False)
    return empty


def _x(seed: int) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal(X_SHAPE).astype(np.float32)


def _matches(got: np.ndarray, want: np.ndarray) -> None:
    assert got.shape == want.shape and got.dtype == want.dtype
    tol = tolerance(float(np.abs(want).max()), 0.0, rtol=RTOL)  # RTOL x max|ref|
    assert np.abs(got - want).max() <= tol, (np.abs(got - want).max(), tol)


def test_android_target_is_the_cross_toolchain_and_self_contained():
    t = targets.get("android-arm64")
    assert t.tvm["mtriple"] == "aarch64-linux-gnu" and t.cc == "aarch64-linux-gnu-g++"
    assert t.wheel_platform == "manylinux_2_28_aarch64" and t.self_contained
    assert t.emulator == ("qemu-aarch64",)  # no sysroot: the bundle brings its libraries
    assert t.compiler() == "aarch64-linux-gnu-g++"  # no NDK, no environment variable
    assert not targets.get("arm").self_contained


def test_self_contained_is_a_generic_target_field(tmp_path):
    (tmp_path / "board.toml").write_text(
        'arch = "aarch64"\n[tvm]\nkind = "llvm"\nmtriple = "aarch64-linux-gnu"\n'
        '[deploy]\nself_contained = true\n')
    assert targets.get(str(tmp_path / "board.toml")).self_contained


def test_bundle_carries_its_loader_and_every_needed_library(bundle):
    manifest = json.loads((bundle / "manifest.json").read_text())
    assert manifest["validation"]["ok"] and manifest["validation"]["device"].startswith("qemu")
    assert manifest["bundle"]["loader"] == "lib/ld-linux-aarch64.so.1"
    lib = {p.name for p in (bundle / "lib").iterdir()}
    assert SYSTEM_LIBS | {"libtvm_runtime.so", "libtvm_ffi.so"} <= lib
    readelf = "aarch64-linux-gnu-readelf"
    for path in elf_files(bundle):  # the closure: whatever any ELF file needs is in lib/
        assert elf_machine(path) == "aarch64", path
        dyn = subprocess.run([readelf, "-d", str(path)], capture_output=True, text=True,
                             check=True).stdout
        needed = {ln.split("[")[1].rstrip("]") for ln in dyn.splitlines() if "(NEEDED)" in ln}
        assert needed <= lib, (path.name, needed - lib)
    sums = manifest["bundle"]["sha256"]
    assert SYSTEM_LIBS <= set(sums)
    for script in ("run.sh", "rpc.sh"):
        text = (bundle / script).read_text()
        assert '"$here/lib/ld-linux-aarch64.so.1" --library-path "$here/lib" "$here/edgec-' \
            in text
        assert "[[" not in text and "function " not in text and "$'" not in text  # POSIX sh
    assert "adb push" in (bundle / "README.txt").read_text()


def test_runs_under_qemu_with_an_empty_sysroot(bundle, model, empty_sysroot, tmp_path):
    """Only the bundle's files exist for the guest: the plain program cannot even start, the
    launcher runs it (several calls, --repeat) and matches onnxruntime."""
    bare = subprocess.run(["qemu-aarch64", "-L", str(empty_sysroot), str(bundle / "edgec-run")],
                          capture_output=True, text=True, timeout=120)
    assert bare.returncode != 0 and "ld-linux-aarch64.so.1" in bare.stderr
    for seed in (1, 2):
        result = run_bundle(bundle, device="qemu", feed={"x": _x(seed)})
        assert result.emulated
        _matches(result.outputs["y"], ort_run(model, {"x": _x(seed)})[0])
    np.save(tmp_path / "x.npy", _x(3))
    (tmp_path / "out").mkdir()
    env = dict(os.environ, EDGEC_EMULATOR=f"qemu-aarch64 -L {empty_sysroot}")
    done = subprocess.run(["sh", str(bundle / "run.sh"), "--input", f"x={tmp_path / 'x.npy'}",
                           "--output-dir", str(tmp_path / "out"), "--repeat", "3"],
                          cwd="/", env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout.strip().splitlines()[-1])["runs"] == 3
    _matches(np.load(tmp_path / "out" / "y.npy"), ort_run(model, {"x": _x(3)})[0])
    rpc = subprocess.run(["sh", str(bundle / "rpc.sh"), "--help"], env=env, capture_output=True,
                         text=True, timeout=120)
    assert rpc.returncode == 0 and "usage: edgec-rpc-server" in rpc.stdout, rpc.stderr


_FAKE_ADB = """#!{python}
# A fake adb: records each call in $FAKE_ADB_LOG and performs it here, the phone's
# /data/local/tmp being $FAKE_ADB_ROOT; `devices` lists $FAKE_ADB_DEVICES (SERIAL:STATE,...);
# the call $FAKE_ADB_FAIL names (push, shell, pull) fails as with the phone unplugged.
import json, os, shutil, subprocess, sys

args = sys.argv[1:]
serial = None
if args[:1] == ["-s"]:
    serial, args = args[1], args[2:]
with open(os.environ["FAKE_ADB_LOG"], "a") as log:
    log.write(json.dumps({{"serial": serial, "args": args}}) + "\\n")
root = os.environ["FAKE_ADB_ROOT"]
devices = [d.split(":") for d in os.environ["FAKE_ADB_DEVICES"].split(",") if d]


def here(path):
    return path.replace("/data/local/tmp", root)


def copy(src, dst):  # as adb does: into dst when it is a folder
    if os.path.isdir(dst):
        dst = os.path.join(dst, os.path.basename(src.rstrip("/")))
    (shutil.copytree if os.path.isdir(src) else shutil.copy2)(src, dst)


if args == ["devices"]:
    print("List of devices attached")
    print("".join(f"{{s}}\\t{{state}}\\n" for s, state in devices))
    sys.exit(0)
if serial is not None and [serial, "device"] not in devices:
    sys.exit(f"adb: device '{{serial}}' not found")
if args[0] == os.environ.get("FAKE_ADB_FAIL"):  # the phone gone meanwhile
    sys.exit("adb: device offline")
if args[0] == "push":
    for src in args[1:-1]:
        copy(src, here(args[-1]))
elif args[0] == "pull":
    copy(here(args[1]), args[2])
elif args[0] == "shell":
    sys.exit(subprocess.run(["sh", "-c", here(" ".join(args[1:]))]).returncode)
else:
    sys.exit(f"fake adb: unsupported call {{args}}")
"""


@pytest.fixture
def fake_adb(tmp_path, monkeypatch, empty_sysroot):
    """A fake adb first on PATH (one phone, SERIAL, attached); yields its call log reader and
    the folder standing for the phone's /data/local/tmp."""
    bin_dir, phone = tmp_path / "bin", tmp_path / "phone-tmp"
    bin_dir.mkdir()
    phone.mkdir()
    adb = bin_dir / "adb"
    adb.write_text(_FAKE_ADB.format(python=sys.executable))
    adb.chmod(0o755)
    log = tmp_path / "adb.log"
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("FAKE_ADB_LOG", str(log))
    monkeypatch.setenv("FAKE_ADB_ROOT", str(phone))
    monkeypatch.setenv("FAKE_ADB_DEVICES", f"{SERIAL}:device")
    monkeypatch.delenv("ANDROID_SERIAL", raising=False)

    def calls() -> list[dict]:
        return [json.loads(ln) for ln in log.read_text().splitlines()] if log.exists() else []

    return calls, phone


@pytest.mark.parametrize("device", ["adb", f"adb://{SERIAL}"])
def test_adb_device_pushes_runs_pulls_and_cleans_up(bundle, model, fake_adb, device):
    calls, phone = fake_adb
    result = run_bundle(bundle, device=device, feed={"x": _x(7)}, repeat=2)
    _matches(result.outputs["y"], ort_run(model, {"x": _x(7)})[0])
    assert result.device == device and result.latency["runs"] == 2
    assert result.emulated  # this 'phone' is an x86-64 host: run.sh ran it under qemu
    log = calls()
    assert log[0] == {"serial": None, "args": ["devices"]}
    assert all(c["serial"] == SERIAL for c in log[1:])
    verbs = [c["args"][0] for c in log[1:]]
    assert verbs == ["shell", "push", "shell", "pull", "shell"], log
    mkdir, push, run, pull, cleanup = (c["args"] for c in log[1:])
    folder = mkdir[1].removeprefix("mkdir -p ").removesuffix("/out")
    assert folder.startswith("/data/local/tmp/edgec-")
    assert push[1] == str(bundle) and push[2].endswith("x.npy") and push[-1] == f"{folder}/"
    assert run[1].startswith(f"sh {folder}/{bundle.name}/run.sh --input x={folder}/x.npy")
    assert "--repeat 2" in run[1]
    assert pull[1] == f"{folder}/out"
    assert cleanup == ["shell", f"rm -rf {folder}"]
    assert list(phone.iterdir()) == []  # the folder is gone from the phone


def test_edgec_run_device_adb_cli(bundle, fake_adb, cli):
    calls, _ = fake_adb
    code, out, err = cli("run", bundle, "--device", f"adb://{SERIAL}", "--repeat", "2")
    assert code == 0, err
    assert "y: shape [1, 32, 28, 28] float32" in out
    assert "latency  median" in out and "over 2 runs" in out
    assert [c["args"][0] for c in calls()][-1] == "shell"


@pytest.mark.parametrize("devices, device, match", [
    ("", "adb", r"no Android device attached and ready \(adb devices lists: none\)"),
    (f"{SERIAL}:unauthorized", "adb", rf"adb devices lists: {SERIAL} \(unauthorized\)"),
    (f"{SERIAL}:device", "adb://OTHER", rf"adb device 'OTHER' is not attached and ready "
                                        rf"\(adb devices lists: {SERIAL} \(device\)\)"),
    (f"{SERIAL}:device,B:device", "adb", r"several adb devices attached .* adb://SERIAL"),
    (f"{SERIAL}:device", "adb://", r"bad device 'adb://'; expected adb or adb://SERIAL"),
])
def test_adb_device_errors(bundle, fake_adb, monkeypatch, devices, device, match):
    calls, _ = fake_adb
    monkeypatch.setenv("FAKE_ADB_DEVICES", devices)
    with pytest.raises(EdgecError, match=match) as err:
        run_bundle(bundle, device=device, feed={"x": _x(0)})
    assert "\n" not in str(err.value)
    assert all(c["args"] == ["devices"] for c in calls())  # nothing pushed, nothing run


def test_adb_failing_is_one_line(bundle, fake_adb, cli, monkeypatch):
    """adb itself failing (the phone gone meanwhile): its last line, and the folder removed."""
    calls, _ = fake_adb
    monkeypatch.setenv("FAKE_ADB_FAIL", "push")
    code, _, err = cli("run", bundle, "--device", "adb")
    assert code == 2 and f"copying the bundle to adb device {SERIAL} failed: adb: device " \
        "offline" in err
    folder = calls()[1]["args"][1].removeprefix("mkdir -p ").removesuffix("/out")
    assert calls()[-1]["args"] == ["shell", f"rm -rf {folder}"]


def test_adb_missing_is_a_clear_error(bundle, cli, monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))  # no adb there
    code, _, err = cli("run", bundle, "--device", "adb")
    assert code == 2 and "adb not found: install Android's platform tools" in err
