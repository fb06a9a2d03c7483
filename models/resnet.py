"""ResNet-18 (He et al. 2016) as torchvision builds it: BasicBlocks, 1x1 strided downsample."""

from __future__ import annotations

import onnx

from .builder import GraphBuilder


def _basic_block(g: GraphBuilder, x: str, cout: int, stride: int) -> str:
    y = g.conv_bn(x, cout, 3, stride)
    y = g.conv_bn(y, cout, 3, 1, act=None)
    if stride != 1 or g.shapes[x][1] != cout:
        x = g.conv_bn(x, cout, 1, stride, act=None)
    return g.act(g.add(y, x))


def resnet18(seed: int = 0) -> onnx.ModelProto:
    """ResNet-18, 224x224x3 in, 1000 classes (11.7 M params, 1.8 GMACs)."""
    g = GraphBuilder("resnet18", [1, 3, 224, 224], seed)
    x = g.pool(g.conv_bn(g.input_name, 64, 7, 2, 3), "max", 3, 2, pad=1)
    for i, cout in enumerate((64, 128, 256, 512)):
        x = _basic_block(g, x, cout, 1 if i == 0 else 2)
        x = _basic_block(g, x, cout, 1)
    return g.build(g.gemm(g.flatten(g.global_pool(x)), 1000))
