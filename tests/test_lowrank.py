"""passes/lowrank.py and compress/activations.py: the low-rank math on its own. Full rank is
exact for every group count, plain or data-aware; data-aware factors lose less on the inputs
a layer sees; the ridge refit reproduces a layer; im2col patches give onnxruntime's conv."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import helper

from edgec.compiler.compress.activations import patches, tensors
from edgec.compiler.passes.lowrank import factor, full_rank, project, refit, whitening

from conftest import ort_run, random_const, tiny_model


def _pair(f, p):
    """The pair's output on patches p [rows, d]: second(first(p)) + bias."""
    z = p @ project(f).T
    out = z @ f.second.reshape(f.second.shape[0], -1).T
    return out + (0 if f.bias is None else f.bias)


def _correlated(rng, rows, d, rank=3):
    """Inputs in a low-dimensional subspace plus a little noise: what whitening exploits."""
    return rng.standard_normal((rows, rank)) @ rng.standard_normal((rank, d)) * 3 \
        + 0.05 * rng.standard_normal((rows, d))


@pytest.mark.parametrize("groups", [1, 2, 4])
def test_full_rank_is_exact_plain_and_data_aware(groups):
    rng = np.random.default_rng(0)
    w = rng.standard_normal((12, 8, 3, 3))
    p = _correlated(rng, 500, 72)
    m = p.T @ p / len(p)
    want = p @ w.reshape(12, -1).T
    for roots in (None, whitening(m, groups)):
        f = factor(w, groups, full_rank(w.shape, groups), roots=roots)
        assert np.allclose(_pair(f, p), want, rtol=1e-6, atol=1e-6 * np.abs(want).max())


def test_data_aware_loses_less_on_the_inputs_the_layer_sees():
    rng = np.random.default_rng(1)
    w = rng.standard_normal((16, 8, 3, 3))
    p = _correlated(rng, 2000, 72)
    want = p @ w.reshape(16, -1).T
    m = p.T @ p / len(p)
    plain = np.linalg.norm(_pair(factor(w, 1, 3), p) - want)
    aware = np.linalg.norm(_pair(factor(w, 1, 3, roots=whitening(m, 1)), p) - want)
    assert aware < 0.1 * plain  # rank 3 spans what the 3-dimensional inputs reach


def test_refit_solves_the_second_conv_and_bias():
    """With a shifted target (y = W p + b + a change the factors cannot know of), the refit
    second conv and bias reproduce y on the data better than the factors alone."""
    rng = np.random.default_rng(2)
    w = rng.standard_normal((10, 4, 3, 3))
    bias = rng.standard_normal(10)
    p = rng.standard_normal((3000, 36))
    y = p @ w.reshape(10, -1).T + bias + 0.5
    pt = np.hstack([p, np.ones((len(p), 1))])
    f = factor(w, 1, full_rank(w.shape, 1), bias)
    fitted = refit(f, pt.T @ pt / len(p), pt.T @ y / len(p), ridge=1e-9)
    assert np.abs(_pair(fitted, p) - y).max() < 1e-5
    assert np.abs(_pair(f, p) - y).max() > 0.4


@pytest.mark.parametrize("stride,pads,dil", [(1, [1, 1, 1, 1], 1), (2, [1, 0, 2, 1], 1),
                                             (1, [2, 2, 2, 2], 2)])
def test_patches_give_onnxruntimes_conv(stride, pads, dil):
    rng = np.random.default_rng(3)
    w = random_const("w", [6, 5, 3, 3], rng)
    conv = helper.make_node("Conv", ["x", "w"], ["y"], strides=[stride, stride], pads=pads,
                            dilations=[dil, dil], kernel_shape=[3, 3])
    model = tiny_model([conv], [2, 5, 11, 9], [w])
    x = rng.standard_normal((2, 5, 11, 9)).astype(np.float32)
    y = ort_run(model, {"x": x})[0]
    got = patches(x, conv, (3, 3)) @ onnx.numpy_helper.to_array(w).reshape(6, -1).T
    assert np.allclose(got, y.transpose(0, 2, 3, 1).reshape(-1, 6), atol=1e-4)


def test_tensors_batches_a_free_batch_model_and_matches_one_by_one():
    rng = np.random.default_rng(4)
    w = random_const("w", [4, 3, 3, 3], rng)
    conv = helper.make_node("Conv", ["x", "w"], ["h"], pads=[1, 1, 1, 1])
    relu = helper.make_node("Relu", ["h"], ["y"])
    model = tiny_model([conv, relu], [1, 3, 8, 8], [w])
    feeds = [{"x": rng.standard_normal((1, 3, 8, 8)).astype(np.float32)} for _ in range(70)]
    got = list(tensors(model, ["h", "y"], feeds))  # 64 in one call, then 6
    assert len(got) == 70 and got[0][0].shape == (1, 4, 8, 8)
    for feed, (h, y) in zip(feeds, got):
        assert np.allclose(y, ort_run(model, feed)[0], atol=1e-5)
        assert np.allclose(np.maximum(h, 0), y, atol=1e-5)
