"""The ARM proxy (runtime/icount.py, icount_ort.py): guest instructions per inference under
qemu on the target's proxy CPU, counted by edgec's TCG plugin, for an edgec bundle and for
onnxruntime's aarch64 library running the same model. Counts are repeatable, grow with the
work, and start-up is cancelled; bad input is one line, exit 2."""

from __future__ import annotations

import shutil
import subprocess

import numpy as np
import pytest
from onnx import helper

import edgec
from edgec.runtime.icount import count_instructions

from conftest import random_const, save, tiny_model

pytestmark = pytest.mark.skipif(shutil.which("qemu-aarch64") is None,
                                reason="qemu-user is not installed (./dev setup installs it)")


def _convs(n: int):
    """`n` 3x3 convs of 16 channels on 16x16, ReLU after each: n times the work of one."""
    rng = np.random.default_rng(0)
    inits = [random_const(f"w{i}", (16, 16, 3, 3), rng) for i in range(n)]
    nodes, x = [], "x"
    for i in range(n):
        nodes += [helper.make_node("Conv", [x, f"w{i}"], [f"c{i}"], pads=[1] * 4),
                  helper.make_node("Relu", [f"c{i}"], [f"r{i}" if i < n - 1 else "y"])]
        x = f"r{i}"
    return tiny_model(nodes, [1, 16, 16, 16], inits)


@pytest.fixture(scope="module")
def bundles(tmp_path_factory):
    root = tmp_path_factory.mktemp("icount")
    out = {}
    for n in (1, 3):
        src = save(_convs(n), root / f"convs{n}.onnx")
        out[n] = edgec.compile(src, output=root / f"convs{n}-rpi4", target="rpi4", bundle=True,
                               validate=False).artifact
    return out


def test_counts_repeat_and_grow_with_the_work(bundles):
    one = count_instructions(bundles[1], calls=2, onnxruntime=False)
    again = count_instructions(bundles[1], calls=2, onnxruntime=False)
    three = count_instructions(bundles[3], calls=2, onnxruntime=False)
    assert one["cpu"] == "cortex-a72" and one["threads"] == 1
    a, b = (r["edgec"]["instructions_per_inference"] for r in (one, again))
    assert a > 0 and abs(a - b) <= 0.01 * a
    # one 16x16x16 3x3 conv is 590k MACs: a NEON build needs well under one instruction each
    assert a < 590e3
    ratio = three["edgec"]["instructions_per_inference"] / a
    assert 2.4 <= ratio <= 3.6, ratio
    assert one["edgec"]["startup_instructions"] > a  # loading the runtime, cancelled out


def _unshare_works() -> bool:
    cmd = ["unshare", "-m", "true"] if shutil.which("unshare") else ["false"]
    return subprocess.run(cmd, capture_output=True).returncode == 0 or subprocess.run(
        ["unshare", "-rm", "true"], capture_output=True).returncode == 0


@pytest.mark.skipif(not shutil.which("unshare") or not _unshare_works(),
                    reason="no private mount namespace here (unshare): onnxruntime needs an "
                           "aarch64 /proc/cpuinfo under qemu")
def test_onnxruntime_counted_under_the_same_cpu(bundles, cli):
    code, out, err = cli("bench", bundles[3], "--device", "qemu", "--count-instructions",
                         "--calls", "2")
    assert code == 0, err
    lines = {ln.split()[0]: ln for ln in out.splitlines() if ln.strip()}
    assert "edgec" in lines and "onnxruntime" in lines and "ratio" in lines
    ort = float(lines["onnxruntime"].split()[1])
    assert ort > 0 and "qemu -cpu cortex-a72, 1 thread" in out


@pytest.mark.skipif(not shutil.which("unshare") or not _unshare_works(),
                    reason="no private mount namespace here (unshare)")
def test_onnxruntime_counted_beside_a_self_contained_bundle(tmp_path):
    # android-arm64's emulator names no sysroot (its bundle brings its libraries);
    # edgec-ort-count, built with the same toolchain, runs on that toolchain's sysroot
    bundle = edgec.compile(save(_convs(1), tmp_path / "c.onnx"), output=tmp_path / "android",
                           target="android-arm64", bundle=True, validate=False).artifact
    result = count_instructions(bundle, calls=1)
    assert result["onnxruntime"]["instructions_per_inference"] > 0
    assert result["edgec"]["instructions_per_inference"] > 0


@pytest.mark.parametrize("args,message", [
    (["--count-instructions"], "give --device qemu"),
    (["--device", "qemu", "--count-instructions", "{host}"], "not a bundle"),
])
def test_bad_input_is_one_line(args, message, bundles, tmp_path, cli):
    host = edgec.compile(save(_convs(1), tmp_path / "c.onnx"), output=tmp_path / "host",
                         validate=False).artifact
    target = str(host) if "{host}" in args else str(bundles[1])
    argv = ["bench", target, *[a for a in args if a != "{host}"]]
    code, _, err = cli(*argv)
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1


@pytest.mark.skipif(shutil.which("llvm-mca-19") is None,
                    reason="Debian's llvm-19 is not installed (./dev setup installs it)")
def test_hottest_blocks_get_llvm_mca_cycles(bundles):
    r = count_instructions(bundles[3], calls=2, onnxruntime=False, mca=True)
    mca = r["mca"]
    assert 0.5 <= mca["coverage"] <= 1.02  # the top blocks: most of the work, not more
    assert mca["blocks"] == sorted(mca["blocks"], key=lambda b: -b["share"])
    conv = mca["blocks"][0]  # the conv's inner loop: NEON multiply-adds
    assert conv["runs_per_inference"] > 100
    a72, n1 = (mca["cycles_per_inference"][c] for c in ("cortex-a72", "neoverse-n1"))
    # fewer cycles than instructions issued on either core, and the wider N1 needs fewer
    assert 0 < n1 < a72 < r["edgec"]["instructions_per_inference"]
