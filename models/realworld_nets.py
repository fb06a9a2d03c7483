"""torch modules of models/realworld.py: MobileNetV3 (SE, hard-swish, odd widths), a DBNet-style
text detector, a YOLO-style detector and EfficientNet-style blocks, written here from their
papers' block definitions. Importing this module needs torch; models/realworld.py imports it
only when a model is exported."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

Stride = int | tuple[int, int]

ACTS = {"relu": nn.ReLU, "hswish": nn.Hardswish, "silu": nn.SiLU, None: nn.Identity}


def scaled(channels: int, width: float, divisor: int = 4) -> int:
    """`channels` x `width`, rounded to a multiple of `divisor` (4: 8, 12, 20, 36, 44, ...),
    at least 8 and never under 90% of the unrounded value."""
    v = channels * width
    out = max(8, int(v + divisor / 2) // divisor * divisor)
    return out + divisor if out < 0.9 * v else out


class ConvBN(nn.Sequential):
    """Conv (no bias), BatchNorm, activation; 'same' padding for odd kernels."""

    def __init__(self, cin: int, cout: int, k: int = 1, stride: Stride = 1, groups: int = 1,
                 act: str | None = "relu"):
        super().__init__(nn.Conv2d(cin, cout, k, stride, k // 2, groups=groups, bias=False),
                         nn.BatchNorm2d(cout), ACTS[act]())


class SqueezeExcite(nn.Module):
    """Global average pool, 1x1 conv down, activation, 1x1 conv up, gate, multiply."""

    def __init__(self, c: int, squeezed: int, act: str = "relu", gate: str = "hsigmoid"):
        super().__init__()
        self.down, self.up = nn.Conv2d(c, squeezed, 1), nn.Conv2d(squeezed, c, 1)
        self.act = ACTS[act]()
        self.gate = nn.Hardsigmoid() if gate == "hsigmoid" else nn.Sigmoid()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = F.adaptive_avg_pool2d(x, 1)
        return x * self.gate(self.up(self.act(self.down(s))))


class InvertedResidual(nn.Module):
    """1x1 expand (unless the expansion is 1), k x k depthwise, optional SE, 1x1 project;
    a residual add where the shape is kept."""

    def __init__(self, cin: int, exp: int, cout: int, k: int, stride: Stride,
                 se: SqueezeExcite | None, act: str):
        super().__init__()
        layers = [] if exp == cin else [ConvBN(cin, exp, 1, act=act)]
        layers.append(ConvBN(exp, exp, k, stride, groups=exp, act=act))
        layers += [se] if se is not None else []
        layers.append(ConvBN(exp, cout, 1, act=None))
        self.body = nn.Sequential(*layers)
        self.residual = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x) if self.residual else self.body(x)


# MobileNetV3 (Howard et al. 2019, tables 1 and 2): kernel, expansion, out, SE, act, stride
V3_SMALL = [(3, 16, 16, True, "relu", 2), (3, 72, 24, False, "relu", 2),
            (3, 88, 24, False, "relu", 1), (5, 96, 40, True, "hswish", 2),
            (5, 240, 40, True, "hswish", 1), (5, 240, 40, True, "hswish", 1),
            (5, 120, 48, True, "hswish", 1), (5, 144, 48, True, "hswish", 1),
            (5, 288, 96, True, "hswish", 2), (5, 576, 96, True, "hswish", 1),
            (5, 576, 96, True, "hswish", 1)]
V3_LARGE = [(3, 16, 16, False, "relu", 1), (3, 64, 24, False, "relu", 2),
            (3, 72, 24, False, "relu", 1), (5, 72, 40, True, "relu", 2),
            (5, 120, 40, True, "relu", 1), (5, 120, 40, True, "relu", 1),
            (3, 240, 80, False, "hswish", 2), (3, 200, 80, False, "hswish", 1),
            (3, 184, 80, False, "hswish", 1), (3, 184, 80, False, "hswish", 1),
            (3, 480, 112, True, "hswish", 1), (3, 672, 112, True, "hswish", 1),
            (5, 672, 160, True, "hswish", 2), (5, 960, 160, True, "hswish", 1),
            (5, 960, 160, True, "hswish", 1)]


class MobileNetV3Features(nn.Module):
    """Stem and inverted residuals of `cfg` at `width`; `strides` replaces the strides of the
    blocks that downsample, in order (a text recognizer's (2, 1) keeps the width). forward
    returns the feature map after each block whose index is in `taps` (all blocks: the last)."""

    def __init__(self, cfg: list, width: float, strides: list[Stride] | None = None,
                 taps: tuple[int, ...] = ()):
        super().__init__()
        self.stem = ConvBN(3, scaled(16, width), 3, 2, act="hswish")
        blocks, cin, downs = [], scaled(16, width), iter(strides or [])
        for k, exp, out, se, act, s in cfg:
            stride = next(downs, s) if s == 2 else 1
            e, c = scaled(exp, width), scaled(out, width)
            gate = SqueezeExcite(e, scaled(e // 4, 1.0)) if se else None
            blocks.append(InvertedResidual(cin, e, c, k, stride, gate, act))
            cin = c
        self.blocks, self.taps, self.channels = nn.ModuleList(blocks), taps, cin
        self.tap_channels = [blocks[i].body[-1][0].out_channels for i in taps]

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        x, found = self.stem(x), []
        for i, block in enumerate(self.blocks):
            x = block(x)
            if i in self.taps:
                found.append(x)
        return found or [x]


class TextRecognizer(nn.Module):
    """MobileNetV3-Small at `width` for 48 x W text lines (CRNN/CTC style): (2, 1) strides after
    the first downsample, a last 1x1 conv (hard-swish), 2x2 max pooling, the height averaged
    away, a 1x1 conv to `classes` per column, softmax over the classes: [1, W / 8, classes]."""

    def __init__(self, width: float = 0.5, classes: int = 97):
        super().__init__()
        self.features = MobileNetV3Features(V3_SMALL, width, [2, (2, 1), (2, 1), (2, 1)])
        last = scaled(576, width)
        self.last = ConvBN(self.features.channels, last, 1, act="hswish")
        self.head = nn.Conv2d(last, classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.max_pool2d(self.last(self.features(x)[0]), 2)
        x = self.head(x.mean(dim=2, keepdim=True)).squeeze(2)
        return torch.softmax(x.transpose(1, 2), dim=-1)


class Classifier(nn.Module):
    """MobileNetV3 at `width`: last 1x1 conv, global pool, 1x1 conv (hard-swish), Linear."""

    def __init__(self, cfg: list, width: float, hidden: int, classes: int = 1000):
        super().__init__()
        self.features = MobileNetV3Features(cfg, width)
        last = scaled(cfg[-1][1], width)
        self.last = ConvBN(self.features.channels, last, 1, act="hswish")
        self.pre = nn.Sequential(nn.Conv2d(last, hidden, 1), nn.Hardswish())
        self.fc = nn.Linear(hidden, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.adaptive_avg_pool2d(self.last(self.features(x)[0]), 1)
        return self.fc(torch.flatten(self.pre(x), 1))


class DBNet(nn.Module):
    """DBNet-style text detector: MobileNetV3-Small backbone tapped at strides 4, 8, 16, 32;
    FPN (1x1 laterals, top-down nearest and bilinear upsampling, 3x3 smoothing, all levels
    resized to stride 4 and concatenated); head 3x3 conv, two ConvTranspose 2x2 stride 2,
    sigmoid: a probability map of the input's size."""

    def __init__(self, width: float = 0.35, inner: int = 40):
        super().__init__()
        self.backbone = MobileNetV3Features(V3_SMALL, width, taps=(0, 2, 7, 10))
        self.lateral = nn.ModuleList(nn.Conv2d(c, inner, 1, bias=False)
                                     for c in self.backbone.tap_channels)
        self.smooth = nn.ModuleList(nn.Conv2d(inner, inner // 4, 3, padding=1, bias=False)
                                    for _ in range(4))
        q = inner // 4
        self.head = nn.Sequential(
            ConvBN(inner, q, 3), nn.ConvTranspose2d(q, q, 2, 2), nn.BatchNorm2d(q), nn.ReLU(),
            nn.ConvTranspose2d(q, 1, 2, 2), nn.Sigmoid())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        c2, c3, c4, c5 = (lat(f) for lat, f in zip(self.lateral, self.backbone(x)))
        p4 = c4 + F.interpolate(c5, size=c4.shape[2:], mode="bilinear", align_corners=False)
        p3 = c3 + F.interpolate(p4, scale_factor=2.0, mode="nearest")
        p2 = c2 + F.interpolate(p3, scale_factor=2.0, mode="nearest")
        levels = [s(p) for s, p in zip(self.smooth, (p2, p3, p4, c5))]
        ups = [levels[0]] + [F.interpolate(p, scale_factor=float(2 ** i), mode="nearest")
                             for i, p in enumerate(levels[1:], 1)]
        return self.head(torch.cat(ups, dim=1))


class Bottleneck(nn.Module):
    """Two 3x3 convs (SiLU) with a residual add."""

    def __init__(self, c: int):
        super().__init__()
        self.body = nn.Sequential(ConvBN(c, c, 3, act="silu"), ConvBN(c, c, 3, act="silu"))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


class SplitBlock(nn.Module):
    """YOLO's cross-stage block: 1x1 conv, split in halves, `n` bottlenecks chained on the
    second half, every part concatenated, 1x1 conv."""

    def __init__(self, cin: int, cout: int, n: int = 1):
        super().__init__()
        h = cout // 2
        self.first = ConvBN(cin, 2 * h, 1, act="silu")
        self.chain = nn.ModuleList(Bottleneck(h) for _ in range(n))
        self.last = ConvBN((2 + n) * h, cout, 1, act="silu")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        parts = list(self.first(x).chunk(2, 1))
        for b in self.chain:
            parts.append(b(parts[-1]))
        return self.last(torch.cat(parts, 1))


class PoolPyramid(nn.Module):
    """1x1 conv, three chained 5x5 stride-1 max pools, the four concatenated, 1x1 conv."""

    def __init__(self, c: int):
        super().__init__()
        self.first, self.last = ConvBN(c, c // 2, 1, act="silu"), ConvBN(2 * c, c, 1, act="silu")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        parts = [self.first(x)]
        for _ in range(3):
            parts.append(F.max_pool2d(parts[-1], 5, 1, 2))
        return self.last(torch.cat(parts, 1))


class Yolo(nn.Module):
    """YOLO-style detector: stride-2 3x3 convs and split blocks (SiLU) to strides 8, 16, 32, a
    pool pyramid, a top-down (nearest upsample, concat) and bottom-up (stride-2 conv, concat)
    neck, a 1x1 head per scale; the heads' [A x (5 + classes), H x W] maps concatenated,
    transposed to one row per prediction and passed through a sigmoid."""

    def __init__(self, w: tuple[int, ...] = (12, 24, 40, 80, 120), classes: int = 3):
        super().__init__()
        down = lambda a, b: ConvBN(a, b, 3, 2, act="silu")  # noqa: E731
        self.p3 = nn.Sequential(down(3, w[0]), down(w[0], w[1]), SplitBlock(w[1], w[1]),
                                down(w[1], w[2]), SplitBlock(w[2], w[2]))
        self.p4 = nn.Sequential(down(w[2], w[3]), SplitBlock(w[3], w[3]))
        self.p5 = nn.Sequential(down(w[3], w[4]), SplitBlock(w[4], w[4]), PoolPyramid(w[4]))
        self.top4, self.top3 = SplitBlock(w[4] + w[3], w[3]), SplitBlock(w[3] + w[2], w[2])
        self.down3, self.down4 = down(w[2], w[2]), down(w[3], w[3])
        self.out4, self.out5 = SplitBlock(w[2] + w[3], w[3]), SplitBlock(w[3] + w[4], w[4])
        self.heads = nn.ModuleList(nn.Conv2d(c, 3 * (5 + classes), 1) for c in w[2:])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        p3 = self.p3(x)
        p4 = self.p4(p3)
        p5 = self.p5(p4)
        t4 = self.top4(torch.cat([F.interpolate(p5, scale_factor=2.0), p4], 1))
        n3 = self.top3(torch.cat([F.interpolate(t4, scale_factor=2.0), p3], 1))
        n4 = self.out4(torch.cat([self.down3(n3), t4], 1))
        n5 = self.out5(torch.cat([self.down4(n4), p5], 1))
        maps = [h(m).flatten(2) for h, m in zip(self.heads, (n3, n4, n5))]
        return torch.sigmoid(torch.cat(maps, 2).transpose(1, 2))


class MBConv(nn.Module):
    """EfficientNet's block: 1x1 expand (SiLU), k x k depthwise (SiLU), SE (SiLU, sigmoid gate,
    squeezed to a quarter of the block's input channels), 1x1 project, residual add."""

    def __init__(self, cin: int, cout: int, expand: int, k: int, stride: int):
        super().__init__()
        e = cin * expand
        se = SqueezeExcite(e, max(1, cin // 4), act="silu", gate="sigmoid")
        self.block = InvertedResidual(cin, e, cout, k, stride, se, "silu")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.block(x)


# EfficientNet-B0 (Tan and Le 2019, table 1): expansion, kernel, stride, out, repeats
B0 = [(1, 3, 1, 16, 1), (6, 3, 2, 24, 2), (6, 5, 2, 40, 2), (6, 3, 2, 80, 3),
      (6, 5, 1, 112, 3), (6, 5, 2, 192, 4), (6, 3, 1, 320, 1)]


class EfficientNet(nn.Module):
    """EfficientNet-B0's stages at `width`, each stage's repeats scaled by `depth` (at least
    one), a 1x1 conv (SiLU), global pooling, Linear."""

    def __init__(self, width: float = 0.5, depth: float = 0.5, classes: int = 1000):
        super().__init__()
        cin = scaled(32, width)
        layers: list[nn.Module] = [ConvBN(3, cin, 3, 2, act="silu")]
        for expand, k, s, out, repeats in B0:
            for i in range(max(1, round(repeats * depth))):
                layers.append(MBConv(cin, scaled(out, width), expand, k, s if i == 0 else 1))
                cin = scaled(out, width)
        layers.append(ConvBN(cin, scaled(1280, width), 1, act="silu"))
        self.features, self.fc = nn.Sequential(*layers), nn.Linear(scaled(1280, width), classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(self.features(x), 1), 1))
