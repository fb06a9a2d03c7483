"""LeNet-5, AlexNet and a VGG-11-style net: the seeds' classic CNNs.

LeNet-5 and AlexNet follow the seeds' tables (../shared/seeds/001_*) layer by layer, so that
`edgec inspect` reproduces their parameter counts exactly: LeNet-5 61,706; AlexNet 62,378,344
(the seed's corrected table: pad 0 and stride 1 unless stated, Conv-1 11x11/4 gives 54x54).
"""

from __future__ import annotations

import onnx

from .builder import GraphBuilder


def lenet5(seed: int = 0) -> onnx.ModelProto:
    """LeNet-5: 32x32 grey image, two 5x5 convs with tanh and average pooling, three FC layers."""
    g = GraphBuilder("lenet5", [1, 1, 32, 32], seed)
    x = g.pool(g.act(g.conv(g.input_name, 6, 5), "tanh"), "avg", 2, 2)  # 28 -> 14
    x = g.pool(g.act(g.conv(x, 16, 5), "tanh"), "avg", 2, 2)  # 10 -> 5
    x = g.act(g.gemm(g.flatten(x), 120), "tanh")
    x = g.act(g.gemm(x, 84), "tanh")
    return g.build(g.gemm(x, 10))


def alexnet(seed: int = 0) -> onnx.ModelProto:
    """AlexNet as in the seed's corrected table (224x224x3 in, 1000 classes, 62,378,344 params)."""
    g = GraphBuilder("alexnet", [1, 3, 224, 224], seed)
    x = g.act(g.conv(g.input_name, 96, 11, stride=4))  # 54x54x96
    x = g.pool(x, "max", 3, 2)  # 26x26
    x = g.pool(g.act(g.conv(x, 256, 5, pad=2)), "max", 3, 2, ceil=True)  # 26 -> 13
    x = g.act(g.conv(x, 384, 3, pad=1))
    x = g.act(g.conv(x, 384, 3, pad=1))
    x = g.pool(g.act(g.conv(x, 256, 3, pad=1)), "max", 3, 2)  # 13 -> 6
    x = g.dropout(g.flatten(x))
    x = g.dropout(g.act(g.gemm(x, 4096)))
    x = g.act(g.gemm(x, 4096))
    return g.build(g.gemm(x, 1000))


def vgg11(seed: int = 0) -> onnx.ModelProto:
    """VGG-11 convolution stack (config A, with BatchNorm) on 32x32 CIFAR-size input, 10 classes."""
    g = GraphBuilder("vgg11", [1, 3, 32, 32], seed)
    x = g.input_name
    for v in (64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"):
        x = g.pool(x, "max", 2, 2) if v == "M" else g.conv_bn(x, v, 3, bias=True)
    x = g.dropout(g.flatten(x))
    x = g.dropout(g.act(g.gemm(x, 512)))
    return g.build(g.gemm(x, 10))
