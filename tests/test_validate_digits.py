"""The harness on trained models and real data: digits_vgg and digits_resnet, their test split
written as an image folder, compiled for the host and for arm (a bundle run under qemu).
Accuracy through edgec equals onnxruntime's on the fp32 model; a model with perturbed weights
is over budget (exit 1). The report opens in a real browser (slow)."""

from __future__ import annotations

import json
import shutil
import subprocess

import numpy as np
import onnx
import pytest
from PIL import Image

from edgec import models
from edgec.models import digits


@pytest.fixture(scope="module")
def digits_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("digits")
    models.export_data("digits_vgg", root / "test")
    for name in ("digits_vgg", "digits_resnet"):
        models.export(name, root / f"{name}.onnx")
    return root


def _perturbed(src, dst, scale: float) -> None:
    """Every conv weight plus Gaussian noise of `scale` x its own std: a truly worse model."""
    model = onnx.load(str(src))
    rng = np.random.default_rng(0)
    for init in model.graph.initializer:
        if len(init.dims) == 4:
            w = onnx.numpy_helper.to_array(init)
            noisy = w + rng.normal(0, scale * w.std(), w.shape).astype(w.dtype)
            init.CopyFrom(onnx.numpy_helper.from_array(noisy, init.name))
    onnx.save(model, str(dst))


@pytest.mark.parametrize("name", ["digits_vgg", "digits_resnet"])
def test_host_artifact_keeps_the_fp32_accuracy(cli, digits_dir, tmp_path, name):
    src, data = digits_dir / f"{name}.onnx", digits_dir / "test"
    rc, out, err = cli("compile", str(src), "-o", str(tmp_path / "host"), "--data", str(data))
    assert rc == 0, err
    assert "on 16 samples of" in out
    manifest = json.loads((tmp_path / "host" / "manifest.json").read_text())
    assert manifest["preprocess"] == digits.PREPROCESS
    rc, out, err = cli("validate", str(src), str(tmp_path / "host"), "--data", str(data),
                       "--seconds", "0.3", "--processes", "1", "--json")
    assert rc == 0, err
    doc = json.loads(out)
    want = float(next(p.value for p in onnx.load(str(src)).metadata_props
                      if p.key == "edgec.fp32_test_accuracy"))
    ref, host = doc["reference"], doc["candidates"][0]
    assert doc["data"]["samples"] == 360 and doc["data"]["labeled"]
    assert ref["top1"] == pytest.approx(want, abs=1e-4)
    assert host["top1"] == ref["top1"] and host["agreement_top1"] == 1.0
    assert host["cost"]["flops"] < ref["cost"]["flops"]  # BatchNorm folded
    assert host["latency"]["median_ms"] > 0 and ref["latency"]["median_ms"] > 0


def test_arm_bundle_under_qemu_keeps_the_fp32_accuracy(cli, digits_dir, tmp_path):
    src, data = digits_dir / "digits_resnet.onnx", digits_dir / "test"
    rc, _, err = cli("compile", str(src), "--target", "arm", "--bundle", "-o",
                     str(tmp_path / "arm"), "--data", str(data))
    assert rc == 0, err
    assert cli("compile", str(src), "-o", str(tmp_path / "host"), "--no-validate")[0] == 0
    rc, out, err = cli("validate", str(src), str(tmp_path / "arm"), str(tmp_path / "host"),
                       "--data", str(data), "--device", "qemu", "--seconds", "0.2",
                       "--processes", "1", "--json")
    assert rc == 0, err
    doc = json.loads(out)
    arm, host = doc["candidates"]
    assert arm["device"] == "qemu" and arm["top1"] == doc["reference"]["top1"]
    assert arm["agreement_top1"] == 1.0 and "emulated" in arm["latency"]["skipped"]
    assert host["device"] == "here" and host["latency"]["median_ms"] > 0


def test_arm_bundle_over_ssh(cli, digits_dir, ssh_device, tmp_path):
    """The 'board' is this machine over loopback ssh: the bundle's run.sh runs there (under
    qemu where this machine is not aarch64, and then no latency is claimed)."""
    from edgec.targets import host_arch

    src, data = digits_dir / "digits_vgg.onnx", digits_dir / "test"
    rc, _, err = cli("compile", str(src), "--target", "arm", "--bundle", "-o",
                     str(tmp_path / "arm"), "--no-validate")
    assert rc == 0, err
    rc, out, err = cli("validate", str(src), str(tmp_path / "arm"), "--data", str(data),
                       "--device", ssh_device, "--limit", "40", "--seconds", "0.2",
                       "--processes", "1", "--json")
    assert rc == 0, err
    doc = json.loads(out)
    arm = doc["candidates"][0]
    assert doc["data"]["samples"] == 40 and arm["top1"] == doc["reference"]["top1"]
    assert arm["agreement_top1"] == 1.0
    if host_arch() == "aarch64":
        assert arm["latency"]["median_ms"] > 0
    else:
        assert "emulated on ssh://" in arm["latency"]["skipped"]


def test_perturbed_weights_exit_1(cli, digits_dir, tmp_path):
    src = digits_dir / "digits_resnet.onnx"
    _perturbed(src, tmp_path / "worse.onnx", 0.5)
    rc, out, _ = cli("validate", str(src), str(tmp_path / "worse.onnx"), "--data",
                     str(digits_dir / "test"), "--seconds", "0.2", "--processes", "1", "--json")
    doc = json.loads(out)
    worse = doc["candidates"][0]
    assert rc == 1 and not worse["verdict"]["ok"]
    assert doc["reference"]["top1"] - worse["top1"] > 0.01


def test_bad_data_is_one_line_exit_2(cli, digits_dir, tmp_path):
    bad = tmp_path / "bad"
    (bad / "3").mkdir(parents=True)
    (bad / "3" / "x.png").write_bytes(b"not a png")
    src = str(digits_dir / "digits_vgg.onnx")
    rc, _, err = cli("validate", src, src, "--data", str(bad), "--seconds", "0.2",
                     "--processes", "1")
    assert rc == 2 and "x.png" in err and len(err.strip().splitlines()) == 1, err
    rc, _, err = cli("compile", src, "-o", str(tmp_path / "out"), "--data", str(tmp_path / "no"))
    assert rc == 2 and not (tmp_path / "out").exists(), err


@pytest.mark.slow
def test_report_renders_in_a_headless_browser(cli, digits_dir, tmp_path):
    """Debian's chromium opens report.html offline and the screenshot shows the plots: many
    pixels of matplotlib's first two colours, which no text or table of the page uses."""
    browser = shutil.which("chromium")
    assert browser, "chromium is not installed (./dev setup installs it)"
    src = digits_dir / "digits_vgg.onnx"
    _perturbed(src, tmp_path / "worse.onnx", 0.3)
    assert cli("compile", str(src), "-o", str(tmp_path / "host"), "--no-validate")[0] == 0
    rc, _, err = cli("validate", str(src), str(tmp_path / "host"), str(tmp_path / "worse.onnx"),
                     "--data", str(digits_dir / "test"), "--seconds", "0.3", "--processes", "1",
                     "--report", str(tmp_path / "rep"))
    assert rc in (0, 1), err
    shot = tmp_path / "shot.png"
    subprocess.run([browser, "--headless", "--no-sandbox", "--disable-gpu",
                    "--hide-scrollbars", f"--screenshot={shot}", "--window-size=1200,4000",
                    (tmp_path / "rep" / "report.html").as_uri()],
                   check=True, capture_output=True, timeout=120)
    pixels = np.asarray(Image.open(shot).convert("RGB")).astype(int).reshape(-1, 3)
    for colour in ((31, 119, 180), (255, 127, 14)):  # matplotlib C0 blue, C1 orange
        near = np.abs(pixels - colour).sum(1) < 40
        assert near.sum() > 2000, f"plot colour {colour}: {near.sum()} pixels"
