"""The fuzzer's graphs (tests/fuzz.py): random valid CNN layers on one feature map, seeded.

`generate(seed)` draws a rank (3, 4 or 5: conv 1D/2D/3D), a batch (1-2), odd channel counts and
sizes, then 2-6 layers of LAYERS by weight, and sometimes a classifier head. Every layer keeps
the graph valid for onnxruntime (e.g. output_padding below the stride, no dilation with SAME
padding) and tracks the shape it makes.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper


@dataclass
class Graph:
    """A graph under construction: its nodes and weights, and the tensor the chain is at."""

    rng: np.random.Generator
    nodes: list = field(default_factory=list)
    inits: list = field(default_factory=list)
    shapes: dict = field(default_factory=dict)  # tensor name -> shape
    cur: str = "x"

    def name(self, prefix: str) -> str:
        return f"{prefix}{len(self.nodes)}_{len(self.inits)}"

    def const(self, arr: np.ndarray, prefix: str = "w") -> str:
        name = self.name(prefix)
        self.inits.append(numpy_helper.from_array(np.asarray(arr), name))
        return name

    def weight(self, shape: tuple, fan_in: int) -> str:
        w = self.rng.standard_normal(shape) / np.sqrt(max(fan_in, 1))
        return self.const(w.astype(np.float32))

    def add(self, op: str, inputs: list[str], shape: list[int], **attrs) -> str:
        out = self.name(op.lower())
        self.nodes.append(helper.make_node(op, inputs, [out], name=out, **attrs))
        self.shapes[out] = list(shape)
        self.cur = out
        return out

    @property
    def shape(self) -> list[int]:
        return self.shapes[self.cur]


def _window(size: int, k: int, s: int, d: int, pads: tuple[int, int]) -> int:
    return (size + pads[0] + pads[1] - d * (k - 1) - 1) // s + 1


def _padding(g: Graph, ks: list[int], ss: list[int], ds: list[int], sizes: list[int],
             allow_auto: bool = True) -> tuple[dict, list[int]] | None:
    """Random padding attributes for a window op, and its output sizes (None: no valid one)."""
    rank = len(ks)
    mode = g.rng.choice(["explicit", "asym", "auto", "none"]) if allow_auto else "explicit"
    if mode == "auto":
        auto = str(g.rng.choice(["SAME_UPPER", "SAME_LOWER", "VALID"]))
        if auto == "VALID":
            out = [_window(n, k, s, d, (0, 0)) for n, k, s, d in zip(sizes, ks, ss, ds)]
        else:  # SAME: no dilation (onnxruntime refuses it), a total padding >= 0
            out = [-(-n // s) for n, s in zip(sizes, ss)]
            if any(d > 1 or (m - 1) * s + k - n < 0
                   for n, m, k, s, d in zip(sizes, out, ks, ss, ds)):
                return None
        return ({"auto_pad": auto}, out) if min(out) >= 1 else None
    if mode == "none":
        begin = end = [0] * rank
    else:
        begin = [int(g.rng.integers(0, k)) for k in ks]
        end = begin if mode == "explicit" else [int(g.rng.integers(0, k)) for k in ks]
    out = [_window(n, k, s, d, (b, e))
           for n, k, s, d, b, e in zip(sizes, ks, ss, ds, begin, end)]
    return ({"pads": begin + end}, out) if min(out) >= 1 else None


def _window_attrs(g: Graph, max_k: int = 3, dilate: bool = True, auto: bool = True):
    sizes = g.shape[2:]
    for _ in range(8):
        ks = [int(g.rng.integers(1, min(max_k, n) + 1)) for n in sizes]
        ss = [int(g.rng.integers(1, 3)) for _ in sizes]
        ds = [int(g.rng.integers(1, 3)) if dilate and g.rng.random() < 0.3 else 1
              for _ in sizes]
        found = _padding(g, ks, ss, ds, sizes, auto)
        if found:
            attrs, out = found
            attrs = {"kernel_shape": ks, "strides": ss, **attrs}
            if dilate:
                attrs["dilations"] = ds
            return attrs, out
    return None


def conv(g: Graph) -> None:
    n, c = g.shape[:2]
    found = _window_attrs(g)
    if found is None:
        return
    attrs, out = found
    kind = g.rng.choice(["dense", "depthwise", "grouped"])
    groups = 1
    if kind == "depthwise":
        groups = c
    elif kind == "grouped":
        groups = next((d for d in (3, 2, 5) if c % d == 0 and c > d), 1)
    per = int(g.rng.integers(1, 3)) if groups == c else int(g.rng.integers(1, 8))
    c_out = groups * per if groups > 1 else int(g.rng.integers(1, 25))
    ks = attrs["kernel_shape"]
    w = g.weight((c_out, c // groups, *ks), c // groups * int(np.prod(ks)))
    inputs = [g.cur, w]
    if g.rng.random() < 0.6:
        inputs.append(g.const(g.rng.standard_normal(c_out).astype(np.float32) * 0.1, "b"))
    g.add("Conv", inputs, [n, c_out, *out], group=groups, **attrs)


def conv_transpose(g: Graph) -> None:
    n, c, *sizes = g.shape
    ks = [int(g.rng.integers(1, 4)) for _ in sizes]
    ss = [int(g.rng.integers(1, 3)) for _ in sizes]
    ds = [int(g.rng.integers(1, 3)) if g.rng.random() < 0.2 else 1 for _ in sizes]
    pads = [int(g.rng.integers(0, k)) for k in ks] * 2
    extra = [int(g.rng.integers(0, s)) for s in ss]  # onnxruntime: below the stride
    out = [(m - 1) * s + d * (k - 1) + 1 - pb - pe + e for m, s, d, k, pb, pe, e
           in zip(sizes, ss, ds, ks, pads[: len(ks)], pads[len(ks):], extra)]
    if min(out) < 1 or max(out) > 40:
        return
    groups = c if g.rng.random() < 0.25 else 1  # depthwise upsampling (detectors' necks)
    c_out = groups * int(g.rng.integers(1, 3)) if groups > 1 else int(g.rng.integers(1, 17))
    w = g.weight((c, c_out // groups, *ks), c // groups)
    g.add("ConvTranspose", [g.cur, w], [n, c_out, *out], kernel_shape=ks, strides=ss,
          dilations=ds, pads=pads, output_padding=extra, group=groups)


def _ceil_sizes(sizes: list[int], attrs: dict) -> list[int] | None:
    """Output sizes with ceil_mode=1, where every window starts inside the input or its begin
    padding (where one would start in the end padding, runtimes disagree on its count)."""
    ks, ss = attrs["kernel_shape"], attrs["strides"]
    ds = attrs.get("dilations", [1] * len(ks))
    pads = attrs["pads"]
    out = []
    for i, n in enumerate(sizes):
        span = n + pads[i] + pads[i + len(ks)] - ds[i] * (ks[i] - 1) - 1
        m = -(-span // ss[i]) + 1
        if (m - 1) * ss[i] >= n + pads[i]:
            return None
        out.append(m)
    return out


def pool(g: Graph) -> None:
    n, c = g.shape[:2]
    kind = g.rng.choice(["MaxPool", "AveragePool", "LpPool", "GeM"])
    found = _window_attrs(g, dilate=kind == "MaxPool", auto=kind != "LpPool")
    if found is None:
        return
    attrs, out = found
    if kind in ("MaxPool", "AveragePool") and "pads" in attrs and g.rng.random() < 0.3:
        ceil = _ceil_sizes(g.shape[2:], attrs)
        if ceil:
            attrs["ceil_mode"], out = 1, ceil
    if kind == "AveragePool":
        attrs["count_include_pad"] = int(g.rng.integers(0, 2))
    if kind == "LpPool":
        attrs["p"] = 2
    if kind == "GeM":  # (avgpool(max(x, eps)^p))^(1/p), p = 3
        eps = g.const(np.float32(1e-6), "eps")
        low = g.add("Max", [g.cur, eps], g.shape)
        cube = g.add("Pow", [low, g.const(np.float32(3.0), "p")], g.shape)
        mean = g.add("AveragePool", [cube], [n, c, *out], **attrs)
        g.add("Pow", [mean, g.const(np.float32(1 / 3), "q")], [n, c, *out])
        return
    g.add(kind, [g.cur], [n, c, *out], **attrs)


def global_pool(g: Graph) -> None:
    g.add(str(g.rng.choice(["GlobalAveragePool", "GlobalMaxPool"])), [g.cur],
          g.shape[:2] + [1] * (len(g.shape) - 2))


def batchnorm(g: Graph) -> None:
    c = g.shape[1]
    r = g.rng
    params = [r.uniform(0.5, 1.5, c), r.normal(0, 0.1, c), r.normal(0, 0.1, c),
              r.uniform(0.5, 1.5, c)]
    g.add("BatchNormalization", [g.cur] + [g.const(p.astype(np.float32), "bn") for p in params],
          g.shape, epsilon=1e-5)


def activation(g: Graph) -> None:
    kind = g.rng.choice(["Relu", "Clip", "Sigmoid", "HardSigmoid", "HardSwish", "LeakyRelu",
                         "Tanh", "SiLU"])
    if kind == "Clip":
        g.add("Clip", [g.cur, g.const(np.float32(0), "lo"), g.const(np.float32(6), "hi")],
              g.shape)
    elif kind == "SiLU":
        x = g.cur
        g.add("Mul", [x, g.add("Sigmoid", [x], g.shape)], g.shape)
    else:
        g.add(str(kind), [g.cur], g.shape)


def squeeze_excite(g: Graph) -> None:
    x, (n, c, *sizes) = g.cur, g.shape
    mid = max(1, c // 4)
    ones = [1] * len(sizes)
    s = g.add("GlobalAveragePool", [x], [n, c, *ones])
    s = g.add("Conv", [s, g.weight((mid, c, *ones), c)], [n, mid, *ones], kernel_shape=ones)
    s = g.add("Relu", [s], [n, mid, *ones])
    s = g.add("Conv", [s, g.weight((c, mid, *ones), mid)], [n, c, *ones], kernel_shape=ones)
    s = g.add(str(g.rng.choice(["Sigmoid", "HardSigmoid"])), [s], [n, c, *ones])
    g.add("Mul", [x, s], [n, c, *sizes])


def residual(g: Graph) -> None:
    """x + f(x) or x * f(x), f a same-shape conv; or Concat(x, f(x)) along channels."""
    x, (n, c, *sizes) = g.cur, g.shape
    k = [int(g.rng.choice([1, 3])) if m >= 3 else 1 for m in sizes]
    concat = g.rng.random() < 0.35
    c_f = int(g.rng.integers(1, 13)) if concat else c
    f = g.add("Conv", [x, g.weight((c_f, c, *k), c * int(np.prod(k)))], [n, c_f, *sizes],
              kernel_shape=k, pads=[v // 2 for v in k] * 2)
    if concat:
        g.add("Concat", [x, f], [n, c + c_f, *sizes], axis=1)
    else:
        g.add(str(g.rng.choice(["Add", "Add", "Mul"])), [x, f], [n, c, *sizes])


def resize(g: Graph) -> None:
    n, c, *sizes = g.shape
    if len(sizes) != 2 or max(sizes) > 16:
        return
    mode = str(g.rng.choice(["nearest", "linear"]))
    coord = str(g.rng.choice(["asymmetric", "half_pixel", "align_corners"]
                             if mode == "linear" else ["asymmetric", "half_pixel"]))
    attrs = {"mode": mode, "coordinate_transformation_mode": coord}
    if mode == "nearest":
        attrs["nearest_mode"] = "floor" if coord == "asymmetric" else "round_prefer_floor"
    scales = g.const(np.array([1, 1, 2, 2], np.float32), "scales")
    g.add("Resize", [g.cur, "", scales], [n, c, 2 * sizes[0], 2 * sizes[1]], **attrs)


def pad(g: Graph) -> None:
    """An explicit Pad (constant, reflect or edge) of the spatial axes, sometimes channels."""
    n, c, *sizes = g.shape
    mode = str(g.rng.choice(["constant", "constant", "reflect", "edge"]))
    top = [min(2, m - 1) if mode == "reflect" else 2 for m in sizes]
    begin = [0, 0] + [int(g.rng.integers(0, t + 1)) for t in top]
    end = [0, 0] + [int(g.rng.integers(0, t + 1)) for t in top]
    if mode == "constant" and g.rng.random() < 0.3:
        end[1] = int(g.rng.integers(1, 4))
    inputs = [g.cur, g.const(np.array(begin + end, np.int64), "pads")]
    if mode == "constant" and g.rng.random() < 0.4:
        inputs.append(g.const(np.float32(g.rng.choice([-1.0, 0.5])), "value"))
    shape = [a + b + e for a, b, e in zip(g.shape, begin, end)]
    g.add("Pad", inputs, shape, mode=mode)


def head(g: Graph) -> None:
    """Flatten (or Reshape to N x -1) and a Gemm classifier."""
    n = g.shape[0]
    size = int(np.prod(g.shape[1:]))
    if size > 4096:
        return
    if g.rng.random() < 0.5:
        flat = g.add("Flatten", [g.cur], [n, size], axis=1)
    else:
        flat = g.add("Reshape", [g.cur, g.const(np.array([n, -1], np.int64), "shape")],
                     [n, size])
    classes = int(g.rng.integers(2, 12))
    g.add("Gemm", [flat, g.weight((classes, size), size),
                   g.const(g.rng.normal(0, 0.1, classes).astype(np.float32), "b")],
          [n, classes], transB=1)


LAYERS = {"conv": (conv, 5), "conv_transpose": (conv_transpose, 1), "pool": (pool, 2),
          "global_pool": (global_pool, 0.3), "batchnorm": (batchnorm, 1.5),
          "activation": (activation, 2), "squeeze_excite": (squeeze_excite, 0.7),
          "residual": (residual, 1.5), "resize": (resize, 0.5), "pad": (pad, 0.8)}


def generate(seed: int) -> onnx.ModelProto:
    """A random valid CNN graph (opset 17), the same for the same seed."""
    rng = np.random.default_rng(seed)
    rank = int(rng.choice([3, 4, 4, 4, 5]))
    top = {3: 24, 4: 13, 5: 6}[rank]
    shape = [int(rng.choice([1, 1, 2])), int(rng.integers(1, 17))] + \
        [int(rng.integers(2, top + 1)) for _ in range(rank - 2)]
    g = Graph(rng, shapes={"x": shape})
    names, weights = zip(*[(k, w) for k, (_, w) in LAYERS.items()])
    p = np.array(weights) / sum(weights)
    for _ in range(int(rng.integers(2, 7))):
        LAYERS[str(rng.choice(names, p=p))][0](g)
    if not g.nodes:
        conv(g)
    if not g.nodes:
        activation(g)
    if rng.random() < 0.3:
        head(g)
    return _model(g)


def _model(g: Graph) -> onnx.ModelProto:
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, g.shapes["x"])
    y = helper.make_tensor_value_info(g.cur, TensorProto.FLOAT, g.shape)
    graph = helper.make_graph(g.nodes, "fuzz", [x], [y], g.inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model, full_check=True)
    return model
