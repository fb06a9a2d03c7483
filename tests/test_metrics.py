"""harness/metrics.py: accuracy, agreement, error and SQNR, accumulated sample by sample."""

from __future__ import annotations

import math

import numpy as np
import pytest

from edgec.harness.metrics import Scores, classifier_output, num_classes


def test_classifier_output_is_the_first_batch_by_classes_output():
    specs = [{"name": "map", "shape": [1, 1, 8, 8]}, {"name": "logits", "shape": [1, 10, 1, 1]},
             {"name": "other", "shape": [1, 5]}]
    assert classifier_output(specs) == "logits"
    assert num_classes(specs) == 10
    assert classifier_output([{"name": "score", "shape": [1, 1]}]) is None
    assert num_classes([{"name": "map", "shape": [1, 3, 8, 8]}]) is None


def test_top1_top5_agreement_error_and_sqnr_match_numpy():
    rng = np.random.default_rng(0)
    ref = rng.standard_normal((40, 10)).astype(np.float32)
    got = ref + rng.normal(0, 0.3, ref.shape).astype(np.float32)
    labels = rng.integers(0, 10, 40)
    scores = Scores("y")
    for i in range(40):  # one sample per call, as a batch-1 model runs
        scores.add({"y": got[i:i + 1]}, {"y": ref[i:i + 1]})
    out = scores.summary(labels)
    assert out["top1"] == pytest.approx(np.mean(got.argmax(1) == labels))
    top5 = np.argsort(-got, axis=1)[:, :5]
    assert out["top5"] == pytest.approx(np.mean((top5 == labels[:, None]).any(1)))
    assert out["agreement_top1"] == pytest.approx(np.mean(got.argmax(1) == ref.argmax(1)))
    diff = got.astype(np.float64) - ref
    row = out["outputs"][0]
    assert row["max_abs_err"] == pytest.approx(np.abs(diff).max())
    assert row["mean_abs_err"] == pytest.approx(np.abs(diff).mean())
    want_sqnr = 10 * np.log10(np.sum(ref.astype(np.float64) ** 2) / np.sum(diff ** 2))
    assert row["sqnr_db"] == pytest.approx(want_sqnr)


def test_identical_outputs_are_exact_and_unlabeled_data_has_no_accuracy():
    ref = np.eye(4, dtype=np.float32)
    scores = Scores("y")
    scores.add({"y": ref}, {"y": ref})
    out = scores.summary(None)
    assert out["agreement_top1"] == 1.0 and "top1" not in out
    assert out["outputs"][0]["sqnr_db"] == math.inf
    assert out["outputs"][0]["max_abs_err"] == 0.0
