"""Nets beyond 2-D classification: a Conv1D time-series classifier, a Conv3D video-clip net, a
ConvTranspose/Resize decoder and a GeM-pooling retrieval head."""

from __future__ import annotations

import numpy as np
import onnx

from .builder import GraphBuilder


def conv1d_timeseries(seed: int = 0) -> onnx.ModelProto:
    """Conv1D classifier for 6-channel sensor windows of 128 steps (dilated conv), 6 classes."""
    g = GraphBuilder("conv1d_timeseries", [1, 6, 128], seed)
    x = g.pool(g.conv_bn(g.input_name, 32, 7), "max", 2, 2)
    x = g.pool(g.conv_bn(x, 64, 5), "max", 2, 2)
    x = g.act(g.bn(g.conv(x, 128, 3, pad=2, dilation=2, bias=False)))
    x = g.dropout(g.flatten(g.global_pool(x)), 0.3)
    return g.build(g.gemm(x, 6))


def conv3d_clip(seed: int = 0) -> onnx.ModelProto:
    """Conv3D net for 8-frame 56x56 RGB clips (C3D-style, spatial stride first), 10 classes."""
    g = GraphBuilder("conv3d_clip", [1, 3, 8, 56, 56], seed)
    x = g.conv_bn(g.input_name, 16, 3, stride=(1, 2, 2), pad=1)
    x = g.pool(g.conv_bn(x, 32, 3, pad=1), "max", 2, 2)
    x = g.pool(g.conv_bn(x, 64, 3, pad=1), "max", 2, 2)
    return g.build(g.gemm(g.flatten(g.global_pool(x)), 10))


def convtranspose_decoder(seed: int = 0) -> onnx.ModelProto:
    """Encoder-decoder producing a 128x128 mask: strided convs with SiLU, ConvTranspose
    upsampling, a nearest Resize, and a sigmoid output."""
    g = GraphBuilder("convtranspose_decoder", [1, 3, 64, 64], seed)
    x = g.conv_bn(g.input_name, 32, 3, 2, act="silu")  # 32x32
    x = g.conv_bn(x, 64, 3, 2, act="silu")  # 16x16
    x = g.act(g.bn(g.conv_transpose(x, 32, 4, 2, 1)))  # 32x32
    x = g.act(g.bn(g.conv_transpose(x, 16, 4, 2, 1)))  # 64x64
    x = g.conv_bn(g.resize(x, 2), 8, 3)  # 128x128
    return g.build(g.act(g.conv(x, 1, 1), "sigmoid"))


def gem_head(seed: int = 0) -> onnx.ModelProto:
    """Image-retrieval embedder: small conv backbone, GeM pooling (p=3), 128-d embedding.

    GeM(x) = (mean(clamp(x, eps)^p))^(1/p), written as exporters do: Clip, Pow, GlobalAveragePool,
    Pow.
    """
    g = GraphBuilder("gem_head", [1, 3, 112, 112], seed)
    x = g.conv_bn(g.input_name, 32, 3, 2)
    x = g.conv_bn(x, 64, 3, 2)
    x = g.conv_bn(x, 64, 3, 1, groups=64)
    x = g.conv_bn(x, 128, 1)
    shape = g.shapes[x]
    x = g.raw("Clip", [x, g.const("eps", np.float32(1e-6)), ""], shape)
    x = g.raw("Pow", [x, g.const("p", np.float32(3.0))], shape)
    x = g.global_pool(x)
    x = g.raw("Pow", [x, g.const("inv_p", np.float32(1 / 3))], g.shapes[x])
    return g.build(g.gemm(g.flatten(x), 128))
