"""Targets are data: the built-in TOML files, user-added ones, and their errors."""

from __future__ import annotations

import pytest

from edgec import targets
from edgec.errors import EdgecError


@pytest.mark.parametrize("name", ["host", "arm", "rpi4", "rpi5", "android-arm64"])
def test_builtin_targets_make_tvm_targets(name):
    t = targets.get(name)
    tvm_target = t.tvm_target()
    assert str(tvm_target.kind) == "llvm"
    assert tvm_target.attrs["mtriple"] == t.tvm["mtriple"]
    assert t.effective_threads() >= 1


def test_board_facts():
    rpi5 = targets.get("rpi5")
    assert rpi5.tvm["mcpu"] == "cortex-a76" and "+dotprod" in rpi5.tvm["mattr"]
    assert rpi5.threads == 4 and rpi5.arch == "aarch64"
    assert targets.get("rpi4").tvm["mcpu"] == "cortex-a72"
    android = targets.get("android-arm64")  # no NDK: glibc cross toolchain, self-contained
    assert android.tvm["mtriple"] == "aarch64-linux-gnu" and android.self_contained


def test_host_is_detected():
    host = targets.get("host")
    assert host.arch == targets.host_arch()
    assert host.tvm["mcpu"] not in ("detect", "native", "")
    assert host.runs_here() and host.cpu_detected


def _ndk_style_target(folder) -> str:
    """A user target whose compiler lives under $EDGEC_TEST_NDK (an `{ENV_VAR}` in cc)."""
    path = folder / "ndk.toml"
    path.write_text('arch = "aarch64"\n[tvm]\nkind = "llvm"\nmtriple = "aarch64-linux-android"\n'
                    '[toolchain]\ncc = "{EDGEC_TEST_NDK}/bin/aarch64-linux-android24-clang++"\n')
    return str(path)


def test_cc_env_placeholder_unset_is_a_clear_error(monkeypatch, tmp_path):
    monkeypatch.delenv("EDGEC_TEST_NDK", raising=False)
    with pytest.raises(EdgecError, match=r"needs \$EDGEC_TEST_NDK .* pass --cc"):
        targets.get(_ndk_style_target(tmp_path)).compiler()


def test_android_cc_override():
    assert targets.get("android-arm64").compiler("g++") == "g++"


def test_compile_without_the_cc_env_var_writes_nothing(cli, tmp_path, monkeypatch):
    from edgec import models

    monkeypatch.delenv("EDGEC_TEST_NDK", raising=False)
    src = tmp_path / "m.onnx"
    models.export("lenet5", src)
    code, _, err = cli("compile", src, "--target", _ndk_style_target(tmp_path), "-o",
                       tmp_path / "out")
    assert code == 2 and "EDGEC_TEST_NDK" in err
    assert not (tmp_path / "out").exists()


def test_unknown_target():
    with pytest.raises(EdgecError, match="unknown target 'pi9'.*arm"):
        targets.get("pi9")


def test_user_target_file_needs_no_code(tmp_path, monkeypatch, cli):
    (tmp_path / "jetson.toml").write_text(
        'description = "Jetson Orin CPU"\narch = "aarch64"\nthreads = 6\n'
        '[tvm]\nkind = "llvm"\nmtriple = "aarch64-linux-gnu"\nmcpu = "cortex-a78"\n'
        '[toolchain]\ncc = "aarch64-linux-gnu-g++"\n')
    monkeypatch.setenv("EDGEC_TARGET_PATH", str(tmp_path))
    t = targets.get("jetson")
    assert t.threads == 6 and t.tvm_target().attrs["mcpu"] == "cortex-a78"
    code, out, _ = cli("targets")
    assert code == 0 and "jetson" in out and "cortex-a78" in out
    assert targets.get(str(tmp_path / "jetson.toml")).name == "jetson"


def test_broken_target_file(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text("[tvm\n")
    with pytest.raises(EdgecError, match="cannot read target file"):
        targets.get(str(bad))


@pytest.mark.parametrize("name, model", [("arm", "aarch64-neon"), ("rpi4", "cortex-a72"),
                                         ("rpi5", "cortex-a76"),
                                         ("android-arm64", "aarch64-neon")])
def test_cpu_model_is_data_picked_by_the_tvm_target(name, model):
    assert targets.cpu_model(targets.get(name).tvm_target()).name == model


def test_cpu_models_end_in_a_catch_all():
    """A target no model names (ARMv7, RISC-V) still gets one: the last matches anything."""
    from tvm.target import Target

    models = targets.cpu_models()
    assert models[-1].match == {}
    riscv = Target({"kind": "llvm", "mtriple": "riscv64-linux-gnu"})
    assert targets.cpu_model(riscv).name == models[-1].name


def test_target_device_is_data(tmp_path):
    (tmp_path / "gpu.toml").write_text('arch = "aarch64"\ndevice = "opencl"\n'
                                       '[tvm]\nkind = "opencl"\n')
    assert targets.get(str(tmp_path / "gpu.toml")).device == "opencl"
    assert targets.get("arm").device == "cpu"
    (tmp_path / "bad.toml").write_text('device = "tpu"\n[tvm]\nkind = "llvm"\n')
    with pytest.raises(EdgecError, match="device 'tpu' is not one of cpu, opencl, cuda"):
        targets.get(str(tmp_path / "bad.toml"))
