"""`edgec validate` on LeNet-5 with seeded data: exit codes, the budget, the report files, and
bad input refused in one line. (Trained models on real data: test_validate_digits.py.)"""

from __future__ import annotations

import base64
import io
import json
import re

import numpy as np
import onnx
import pytest
from PIL import Image

from edgec import models


@pytest.fixture(scope="module")
def lenet(tmp_path_factory):
    """LeNet-5 (seeded weights), its host artifact, a weight-perturbed copy, and 40 seeded
    samples whose labels are the reference's own top-1 (so accuracy is 100%)."""
    from edgec.cli import main

    from conftest import ort_run

    root = tmp_path_factory.mktemp("lenet")
    onnx_path = models.export("lenet5", root / "lenet.onnx")
    assert main(["compile", str(onnx_path), "-o", str(root / "host"), "--no-validate"]) == 0
    model = onnx.load(str(onnx_path))
    rng = np.random.default_rng(1)
    for init in model.graph.initializer:
        if len(init.dims) == 4:  # conv weights: noise of their own size, a truly worse model
            w = onnx.numpy_helper.to_array(init)
            init.CopyFrom(onnx.numpy_helper.from_array(
                w + rng.normal(0, w.std(), w.shape).astype(w.dtype), init.name))
    onnx.save(model, str(root / "perturbed.onnx"))
    x = np.random.default_rng(0).standard_normal((40, 1, 32, 32)).astype(np.float32)
    labels = np.array([ort_run(onnx_path, {"input": x[i:i + 1]})[0].argmax() for i in range(40)])
    np.savez(root / "data.npz", input=x, labels=labels)
    return root


def test_candidates_within_budget_exit_0_and_write_a_report(cli, lenet, tmp_path):
    rc, out, err = cli("validate", str(lenet / "lenet.onnx"), str(lenet / "host"),
                       str(lenet / "lenet.onnx"), "--data", str(lenet / "data.npz"),
                       "--seconds", "0.3", "--processes", "1", "--report", str(tmp_path / "rep"))
    assert rc == 0, err
    assert re.search(r"^host\s+artifact\s+100\.00%", out, re.M), out
    assert "each model alone in fresh processes" in out
    assert {p.name for p in (tmp_path / "rep").iterdir()} >= {
        "report.md", "report.html", "report.json", "pareto_flops.png", "pareto_latency.png",
        "layer_flops.png", "layer_latency_1.png"}
    doc = json.loads((tmp_path / "rep" / "report.json").read_text())
    host = doc["candidates"][0]
    assert host["kind"] == "artifact" and host["top1"] == 1.0 and host["verdict"]["ok"]
    assert host["outputs"][0]["max_abs_err"] < 1e-4 and host["latency"]["median_ms"] > 0
    assert host["layers_ms"] and doc["reference"]["cost"]["params"] == 61_706


def test_report_html_is_self_contained(cli, lenet, tmp_path):
    rc, _, err = cli("validate", str(lenet / "lenet.onnx"), str(lenet / "host"), "--data",
                     str(lenet / "data.npz"), "--seconds", "0.2", "--processes", "1",
                     "--report", str(tmp_path))
    assert rc == 0, err
    page = (tmp_path / "report.html").read_text()
    assert not re.search(r"(src|href)=\"(?!data:)", page), "outside reference in report.html"
    images = re.findall(r'src="data:image/png;base64,([^"]+)"', page)
    assert len(images) >= 4
    for data in images:
        assert Image.open(io.BytesIO(base64.b64decode(data))).size[0] >= 400


def test_a_worse_candidate_exits_1(cli, lenet):
    rc, out, err = cli("validate", str(lenet / "lenet.onnx"), str(lenet / "host"),
                       str(lenet / "perturbed.onnx"), "--data", str(lenet / "data.npz"),
                       "--seconds", "0.2", "--processes", "1")
    assert rc == 1
    assert re.search(r"^perturbed .*OVER BUDGET", out, re.M), out
    assert re.search(r"^host .*OK$", out, re.M), out
    assert "over budget" in err


def test_target_compiles_onnx_candidates_first(cli, lenet):
    rc, out, err = cli("validate", str(lenet / "lenet.onnx"), str(lenet / "lenet.onnx"),
                       "--target", "host", "--data", str(lenet / "data.npz"), "--seconds",
                       "0.2", "--json")
    assert rc == 0, err
    cand = json.loads(out)["candidates"][0]
    assert cand["kind"] == "artifact" and cand["name"] == "lenet-host" and cand["top1"] == 1.0


def test_unlabeled_data_is_judged_by_agreement(cli, lenet, tmp_path):
    with np.load(lenet / "data.npz") as npz:
        np.savez(tmp_path / "x.npz", input=npz["input"])
    rc, out, _ = cli("validate", str(lenet / "lenet.onnx"), str(lenet / "perturbed.onnx"),
                     "--data", str(tmp_path / "x.npz"), "--seconds", "0.2", "--processes", "1",
                     "--json")
    doc = json.loads(out)
    assert rc == 1 and not doc["data"]["labeled"]
    assert "top1" not in doc["candidates"][0]
    assert "agreement" in doc["candidates"][0]["verdict"]["reasons"][0]


@pytest.mark.parametrize("case", ["no_data", "missing", "interface", "foreign"])
def test_bad_input_is_one_line_and_exit_2(cli, lenet, tmp_path, case):
    ref, data = str(lenet / "lenet.onnx"), str(lenet / "data.npz")
    if case == "no_data":
        args, want = [ref, str(lenet / "host")], "needs --data"
    elif case == "missing":
        args, want = [ref, str(tmp_path / "nope.onnx"), "--data", data], "no such model"
    elif case == "interface":
        other = models.export("mobilenet_v2", tmp_path / "m.onnx")
        args, want = [ref, str(other), "--data", data], "the reference"
    else:
        from conftest import foreign_target

        target = foreign_target(tmp_path)
        assert cli("compile", ref, "--target", target, "-o", str(tmp_path / "arm"))[0] == 0
        args, want = [ref, str(tmp_path / "arm"), "--data", data], "does not run here"
    rc, out, err = cli("validate", *args)
    assert rc == 2 and want in err and len(err.strip().splitlines()) == 1, err
