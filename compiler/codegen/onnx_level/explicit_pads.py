"""explicit_pads: auto_pad SAME_UPPER / SAME_LOWER / VALID written out as `pads`.

Pattern: a Conv, MaxPool, AveragePool or LpPool with `auto_pad` other than NOTSET and a static
input shape. Rewrite, per spatial axis i (input n, kernel k, stride s, dilation d):

    VALID:   pads = 0
    SAME_*:  out = ceil(n / s), total = max(0, (out - 1) * s + d * (k - 1) + 1 - n)
             SAME_UPPER: begin = total // 2, end = total - begin (the odd pixel at the end)
             SAME_LOWER: end = total // 2, begin = total - end (the odd pixel at the start)

which is ONNX's definition, so the values are unchanged. Why: TVM's importer derives the padding
itself and gets pooling with SAME_LOWER wrong (one output column short); with explicit pads
every op takes the path real exports use most. Applied to the graph before import, never to the
user's optimized model. Declines (the importer then derives the padding): an auto_pad value ONNX
does not define, ceil_mode with auto_pad (runtimes disagree on its output size), an input shape
or kernel size that is not static. ConvTranspose keeps its auto_pad (its SAME is defined on the
output, and no exporter seen writes it).
"""

from __future__ import annotations

import onnx

from edgec.compiler.passes.fold_constants import static_shapes
from edgec.compiler.passes.graph import attr, set_attr
from edgec.compiler.passes.report import PassReport

OPS = {"Conv", "MaxPool", "AveragePool", "LpPool"}
MODES = ("SAME_UPPER", "SAME_LOWER", "VALID")


def _mode(node: onnx.NodeProto) -> str:
    mode = attr(node, "auto_pad", "NOTSET")
    return mode.decode() if isinstance(mode, bytes) else mode


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


def _declines(node: onnx.NodeProto, mode: str, shapes: dict, ks: list[int]) -> str | None:
    if mode not in MODES:
        return f"auto_pad '{mode}' is not one of {', '.join(MODES)}"
    if attr(node, "ceil_mode", 0):  # runtimes disagree on ceil_mode with auto_pad
        return "ceil_mode with auto_pad"
    if node.input[0] not in shapes:
        return "input shape not static"
    if len(ks) != len(shapes[node.input[0]]) - 2:
        return "kernel_shape unknown"
    return None


def explicit_pads(model: onnx.ModelProto) -> tuple[onnx.ModelProto, PassReport]:
    report = PassReport("explicit_pads")
    if not any(n.op_type in OPS and _mode(n) != "NOTSET" for n in model.graph.node):
        return model, report
    out = onnx.shape_inference.infer_shapes(model)
    shapes = static_shapes(out)
    for node in (n for n in out.graph.node if n.op_type in OPS and _mode(n) != "NOTSET"):
        mode = _mode(node)
        ks = list(attr(node, "kernel_shape", []))
        if not ks and node.op_type == "Conv":
            ks = shapes.get(node.input[1], [])[2:]
        why = _declines(node, mode, shapes, ks)
        if why is not None:
            report.decline(node.name or node.op_type, why)
            continue
        rank = len(ks)
        ss = list(attr(node, "strides", [1] * rank))
        ds = list(attr(node, "dilations", [1] * rank))
        set_attr(node, "auto_pad")
        set_attr(node, "pads", pads_for(mode, shapes[node.input[0]][2:], ks, ss, ds))
        report.count(f"{node.op_type} {mode}")
    return (out, report) if report.changed else (model, report)
