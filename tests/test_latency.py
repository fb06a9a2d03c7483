"""harness/latency.py: each runtime timed alone in fresh processes of its own."""

from __future__ import annotations

import numpy as np
import pytest

from edgec import models, runtime
from edgec.errors import EdgecError
from edgec.harness.latency import alone, compare_alone, time_alone


@pytest.fixture(scope="module")
def lenet(tmp_path_factory):
    from edgec.cli import main

    root = tmp_path_factory.mktemp("lat")
    src = models.export("lenet5", root / "lenet.onnx")
    assert main(["compile", str(src), "-o", str(root / "host"), "--no-validate"]) == 0
    return root


def test_each_runtime_in_its_own_process(lenet):
    feed = runtime.random_inputs([{"name": "input", "shape": [1, 1, 32, 32],
                                   "dtype": "float32"}])
    ours = time_alone("edgec", lenet / "host", feed, threads=1, seconds=0.2)
    assert ours["runtime"] == "edgec" and ours["runs"] >= 20 and ours["threads"] == 1
    assert 0 < ours["p10_ms"] <= ours["median_ms"] <= ours["p90_ms"]
    two = alone("onnxruntime", lenet / "lenet.onnx", feed, threads=1, seconds=0.2, rounds=2)
    assert len(two["processes_ms"]) == 2 and two["method"] == "alone"
    both = compare_alone(lenet / "host", lenet / "lenet.onnx", feed, 1, seconds=0.2, rounds=1)
    assert both["ratio"] == pytest.approx(both["edgec_ms"] / both["onnxruntime_ms"])
    assert both["processes"] == 1 and both["method"] == "alone"


def test_a_failing_child_is_one_line(lenet, tmp_path):
    feed = {"input": np.zeros((1, 1, 8, 8), "float32")}
    with pytest.raises(EdgecError, match="timing edgec .* failed: .*shape"):
        time_alone("edgec", lenet / "host", feed, threads=1, seconds=0.1)
