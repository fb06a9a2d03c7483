"""MobileNet V1, V2 and V3-Small: depthwise-separable convolutions, inverted residuals,
HardSwish and squeeze-excite, with the layer configurations of the papers / torchvision."""

from __future__ import annotations

import onnx

from .builder import GraphBuilder


def _divisible(v: float, d: int = 8) -> int:
    out = max(d, int(v + d / 2) // d * d)
    return out + d if out < 0.9 * v else out


def mobilenet_v1(seed: int = 0) -> onnx.ModelProto:
    """MobileNetV1 1.0-224: 3x3 conv then 13 depthwise/pointwise pairs, 1000 classes."""
    g = GraphBuilder("mobilenet_v1", [1, 3, 224, 224], seed)
    x = g.conv_bn(g.input_name, 32, 3, 2)
    cfg = [(64, 1), (128, 2), (128, 1), (256, 2), (256, 1), (512, 2)]
    cfg += [(512, 1)] * 5 + [(1024, 2), (1024, 1)]
    for cout, stride in cfg:
        x = g.conv_bn(x, g.shapes[x][1], 3, stride, groups=g.shapes[x][1])
        x = g.conv_bn(x, cout, 1)
    x = g.dropout(g.flatten(g.global_pool(x)), 0.001)
    return g.build(g.gemm(x, 1000))


def mobilenet_v2(seed: int = 0) -> onnx.ModelProto:
    """MobileNetV2 1.0-224: inverted residuals with linear bottlenecks, ReLU6, 1000 classes."""
    g = GraphBuilder("mobilenet_v2", [1, 3, 224, 224], seed)
    x = g.conv_bn(g.input_name, 32, 3, 2, act="relu6")
    for t, c, n, s in [(1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2),
                       (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1)]:
        for i in range(n):
            cin = g.shapes[x][1]
            stride = s if i == 0 else 1
            y = x if t == 1 else g.conv_bn(x, cin * t, 1, act="relu6")
            y = g.conv_bn(y, cin * t, 3, stride, groups=cin * t, act="relu6")
            y = g.conv_bn(y, c, 1, act=None)
            x = g.add(y, x) if stride == 1 and cin == c else y
    x = g.conv_bn(x, 1280, 1, act="relu6")
    x = g.dropout(g.flatten(g.global_pool(x)), 0.2)
    return g.build(g.gemm(x, 1000))


def _squeeze_excite(g: GraphBuilder, x: str) -> str:
    c = g.shapes[x][1]
    s = g.act(g.conv(g.global_pool(x), _divisible(c // 4), 1))
    s = g.act(g.conv(s, c, 1), "hardsigmoid")
    return g.mul(x, s)


def mobilenet_v3_small(seed: int = 0) -> onnx.ModelProto:
    """MobileNetV3-Small: HardSwish, squeeze-excite with HardSigmoid gates, 1000 classes."""
    g = GraphBuilder("mobilenet_v3_small", [1, 3, 224, 224], seed)
    x = g.conv_bn(g.input_name, 16, 3, 2, act="hardswish")
    # kernel, expanded channels, out channels, squeeze-excite, activation, stride
    cfg = [(3, 16, 16, True, "relu", 2), (3, 72, 24, False, "relu", 2),
           (3, 88, 24, False, "relu", 1), (5, 96, 40, True, "hardswish", 2),
           (5, 240, 40, True, "hardswish", 1), (5, 240, 40, True, "hardswish", 1),
           (5, 120, 48, True, "hardswish", 1), (5, 144, 48, True, "hardswish", 1),
           (5, 288, 96, True, "hardswish", 2), (5, 576, 96, True, "hardswish", 1),
           (5, 576, 96, True, "hardswish", 1)]
    for k, exp, cout, se, act, stride in cfg:
        cin = g.shapes[x][1]
        y = x if exp == cin else g.conv_bn(x, exp, 1, act=act)
        y = g.conv_bn(y, exp, k, stride, groups=exp, act=act)
        if se:
            y = _squeeze_excite(g, y)
        y = g.conv_bn(y, cout, 1, act=None)
        x = g.add(y, x) if stride == 1 and cin == cout else y
    x = g.conv_bn(x, 576, 1, act="hardswish")
    x = g.act(g.gemm(g.flatten(g.global_pool(x)), 1024), "hardswish")
    return g.build(g.gemm(g.dropout(x, 0.2), 1000))
