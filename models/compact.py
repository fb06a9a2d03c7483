"""SqueezeNet 1.1 (fire modules, Concat) and ShuffleNetV2 1.0x (channel split and shuffle)."""

from __future__ import annotations

import numpy as np
import onnx

from .builder import GraphBuilder


def _fire(g: GraphBuilder, x: str, squeeze: int, expand: int) -> str:
    s = g.act(g.conv(x, squeeze, 1))
    return g.concat([g.act(g.conv(s, expand, 1)), g.act(g.conv(s, expand, 3, pad=1))])


def squeezenet1_1(seed: int = 0) -> onnx.ModelProto:
    """SqueezeNet 1.1: fire modules, ceil-mode max pooling, conv classifier, 1000 classes."""
    g = GraphBuilder("squeezenet1_1", [1, 3, 224, 224], seed)
    x = g.pool(g.act(g.conv(g.input_name, 64, 3, 2)), "max", 3, 2, ceil=True)
    x = _fire(g, _fire(g, x, 16, 64), 16, 64)
    x = g.pool(x, "max", 3, 2, ceil=True)
    x = _fire(g, _fire(g, x, 32, 128), 32, 128)
    x = g.pool(x, "max", 3, 2, ceil=True)
    for squeeze, expand in ((48, 192), (48, 192), (64, 256), (64, 256)):
        x = _fire(g, x, squeeze, expand)
    x = g.act(g.conv(g.dropout(x), 1000, 1))
    return g.build(g.flatten(g.global_pool(x)))


def _shuffle(g: GraphBuilder, x: str) -> str:
    """Channel shuffle as exporters write it: Reshape(N,2,C/2,H,W), Transpose, Reshape back."""
    n, c, h, w = g.shapes[x]
    y = g.raw("Reshape", [x, g.const("shape", np.array([n, 2, c // 2, h, w], np.int64))],
              [n, 2, c // 2, h, w])
    y = g.raw("Transpose", [y], [n, c // 2, 2, h, w], perm=[0, 2, 1, 3, 4])
    return g.raw("Reshape", [y, g.const("shape", np.array([n, c, h, w], np.int64))], [n, c, h, w])


def _shuffle_block(g: GraphBuilder, x: str, cout: int, stride: int) -> str:
    half = cout // 2
    if stride == 1:
        n, c, h, w = g.shapes[x]
        split = g.const("split", np.array([c // 2, c // 2], np.int64))
        name = g.node_name("Split")
        left, right = f"{name}_a", f"{name}_b"
        g.nodes.append(onnx.helper.make_node("Split", [x, split], [left, right], name=name, axis=1))
        g.shapes[left] = g.shapes[right] = [n, c // 2, h, w]
    else:
        left = g.conv_bn(x, g.shapes[x][1], 3, 2, groups=g.shapes[x][1], act=None)
        left = g.conv_bn(left, half, 1)
        right = x
    y = g.conv_bn(right, half, 1)
    y = g.conv_bn(y, half, 3, stride, groups=half, act=None)
    y = g.conv_bn(y, half, 1)
    return _shuffle(g, g.concat([left, y]))


def shufflenet_v2(seed: int = 0) -> onnx.ModelProto:
    """ShuffleNetV2 1.0x: stages of 4/8/4 units at 116/232/464 channels, 1000 classes."""
    g = GraphBuilder("shufflenet_v2", [1, 3, 224, 224], seed)
    x = g.pool(g.conv_bn(g.input_name, 24, 3, 2), "max", 3, 2, pad=1)
    for repeats, cout in ((4, 116), (8, 232), (4, 464)):
        for i in range(repeats):
            x = _shuffle_block(g, x, cout, 2 if i == 0 else 1)
    x = g.conv_bn(x, 1024, 1)
    return g.build(g.gemm(g.flatten(g.global_pool(x)), 1000))
