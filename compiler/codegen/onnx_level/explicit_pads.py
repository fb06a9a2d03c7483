"""explicit_pads: auto_pad SAME_UPPER / SAME_LOWER / VALID written out as `pads`.

Pattern: a Conv, MaxPool, AveragePool or LpPool with `auto_pad` other than NOTSET and a static
input shape. Rewrite, per spatial axis i (input n, kernel k, stride s, dilation d):

    VALID:   pads = 0
    SAME_*:  out = ceil(n / s), total = max(0, (out - 1) * s + d * (k - 1) + 1 - n)
             SAME_UPPER: begin = total // 2, end = total - begin (the odd pixel at the end)
             SAME_LOWER: end = total // 2, begin = total - end (the odd pixel at the start)

which is ONNX's definition, so the values are unchanged. Why: TVM's importer derives the
padding itself and gets pooling with SAME_LOWER wrong (one output column short); with explicit
pads every op takes the path real exports use most. Applied to the graph before import, never
to the user's optimized model. ConvTranspose keeps its auto_pad (its SAME is defined on the
output, and no exporter seen writes it).
"""

from __future__ import annotations

import onnx

from edgec.compiler.passes.graph import attr, set_attr
from edgec.compiler.passes.report import PassReport

OPS = {"Conv", "MaxPool", "AveragePool", "LpPool"}


def _shapes(model: onnx.ModelProto) -> dict[str, list[int]]:
    inferred = onnx.shape_inference.infer_shapes(model)
    g = inferred.graph
    out = {}
    for vi in [*g.input, *g.value_info, *g.output]:
        dims = vi.type.tensor_type.shape.dim
        if dims and all(d.HasField("dim_value") for d in dims):
            out[vi.name] = [d.dim_value for d in dims]
    return out


def pads_for(mode: str, sizes: list[int], ks: list[int], ss: list[int],
             ds: list[int]) -> list[int]:
    """ONNX `pads` (all begins, then all ends) equal to auto_pad `mode` on these axes."""
    if mode == "VALID":
        return [0] * (2 * len(sizes))
    begins, ends = [], []
    for n, k, s, d in zip(sizes, ks, ss, ds):
        total = max(0, (-(-n // s) - 1) * s + d * (k - 1) + 1 - n)
        small = total // 2
        begins.append(small if mode == "SAME_UPPER" else total - small)
        ends.append(total - small if mode == "SAME_UPPER" else small)
    return begins + ends


def explicit_pads(model: onnx.ModelProto) -> tuple[onnx.ModelProto, PassReport]:
    report = PassReport("explicit_pads")
    todo = [n for n in model.graph.node
            if n.op_type in OPS and attr(n, "auto_pad", b"NOTSET") not in (b"NOTSET", "NOTSET")]
    if not todo:
        return model, report
    out = onnx.ModelProto()
    out.CopyFrom(model)
    shapes = _shapes(out)
    for node in (n for n in out.graph.node if n.op_type in OPS):
        mode = attr(node, "auto_pad", b"NOTSET")
        mode = mode.decode() if isinstance(mode, bytes) else mode
        if mode == "NOTSET":
            continue
        shape = shapes.get(node.input[0])
        if shape is None:
            report.decline(node.name or node.op_type, "input shape not static")
            continue
        ks = list(attr(node, "kernel_shape", []))
        if not ks and node.op_type == "Conv":
            ks = shapes.get(node.input[1], [])[2:]
        rank = len(shape) - 2
        if len(ks) != rank:
            report.decline(node.name or node.op_type, "kernel_shape unknown")
            continue
        ss = list(attr(node, "strides", [1] * rank))
        ds = list(attr(node, "dilations", [1] * rank))
        set_attr(node, "auto_pad")
        set_attr(node, "pads", pads_for(mode, shape[2:], ks, ss, ds))
        report.count(f"{node.op_type} {mode}")
    return out, report
