"""group_channels: grouped convs with their output channels where the CPU's vectors fill them.

The CPU schedules vectorize a channels-last kernel along its output channels
(cpu/schedules.py). A grouped conv runs as fast as a dense one where each vector of output
channels lies within one group, so that it reads one input value per step, a broadcast (the
rule's tiles keep to a group: cpu/tiles.vector_run). Two layouts that a low-rank
decomposition produces miss that, and their vectors gather their inputs lane by lane:

- a depthwise conv with channel multiplier T > 1 (group C, C*T outputs; output c*T + t reads
  input c): 16-20 GF/s for T = 2..9 on a 32x32 map, 32 channels, against 160-300 for T = 1;
- a grouped conv (1 < group < C) whose r output channels per group no vector divides (r = 5,
  6, 10, 12, 20, ...): 17 GF/s on a 16x16 map, 64 -> 40 channels in 8 groups, against
  400 for a dense conv (AVX-512, 2 threads). A group-1 conv is one group: C -> 12 ran at
  106 GF/s (4-lane vectors), C -> 7 scalar, where pad_channels finds the padding to a whole
  register too wasteful; padded here only where its readers absorb the padding (below).

Rewrites, exact (constant weights permuted and zero-padded only), before TVM imports the graph:

- multiplier: the input tiled T times (Tile: the conv's kernel reads it through an index,
  relax_level/merge_moves) and a depthwise conv over C*T channels in t-major order, its output
  t*C + c the original's c*T + t: each vector reads v contiguous inputs (300 GF/s for T = 3, 9);
- group width: each group's filters (of a grouped or group-1 conv) padded with zero filters to
  the r' >= r that costs the fewest vector FMAs (padded_width), counting the readers' extra
  input channels.

Either leaves the conv's output channels in another order, some of them zeros: a channel map
(each new channel's original channel, or -1). It is taken only where every reader can follow
the map, so no kernel is added:
- an elementwise activation (pad_channels.PASS_THROUGH): its output keeps the map;
- a group-1 Conv (the 1x1 conv of a decomposition): its weights' input channels follow the
  map, zeros for padding, and its output is as before.
A conv read by anything else (Add, Concat, a graph output) is declined: a Gather back to the
original order would be a kernel of its own (cpu/tiles.vector_run still keeps the vectors
within groups where a vector divides them).
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import helper

from edgec.compiler.codegen.cpu.tiles import vector_length
from edgec.compiler.codegen.onnx_level.pad_channels import (
    PASS_THROUGH,
    conv_weights,
    rename_output,
    write_input,
)
from edgec.compiler.passes.graph import (
    GraphIndex,
    attr,
    set_attr,
    set_const,
    tidy,
    unique_name,
)
from edgec.compiler.passes.report import PassReport

SUFFIX = "grouped"  # of the tensors and constants the rewrite makes


def padded_width(r: int, reduction: int, reader: int, lanes: int) -> int:
    """Output channels per group r' >= r: r, or r rounded up to a multiple of a vector (the
    lanes, half of them, 4), whichever has the fewest vector FMAs per pixel and group: the
    conv's `reduction` (k^2 C_g) times its vectors per group (r' / v; r' lanes one by one
    where no vector divides r'), plus its reader's, a group-1 conv of `reader` outputs that
    reads r' channels (r' x reader / lanes; 0: no such reader). The narrowest on a tie."""
    def cost(n: int) -> float:
        v = vector_length(n, lanes)
        return reduction * (n // v if v else n) + n * reader / lanes

    options = {r} | {-(-r // v) * v for v in (lanes, lanes // 2, 4) if v >= 4}
    return min(sorted(options), key=cost)


def _multiplier(node: onnx.NodeProto, w: np.ndarray) -> int:
    """T of a depthwise conv with channel multiplier T > 1 (W[C*T, 1, kh, kw], group C), else 0."""
    group = attr(node, "group", 1)
    if group < 2 or w.shape[1] != 1 or w.shape[0] % group or w.shape[0] == group:
        return 0
    return w.shape[0] // group


def _tile_multiplier(graph: onnx.GraphProto, node: onnx.NodeProto, w: np.ndarray,
                     b: np.ndarray | None, t: int) -> np.ndarray:
    """Rewrite a multiplier-T depthwise conv as Tile + a t-major depthwise conv; returns the
    channel map (new channel t*C + c -> original c*T + t)."""
    c = attr(node, "group", 1)
    src = (np.arange(c)[None, :] * t + np.arange(t)[:, None]).reshape(-1)
    reps = set_const(graph, unique_name(graph, f"{node.input[0]}_reps"),
                     np.array([1, t, 1, 1], np.int64))
    tiled = unique_name(graph, f"{node.input[0]}_tiled")
    graph.node.insert(list(graph.node).index(node),
                      helper.make_node("Tile", [node.input[0], reps], [tiled], name=tiled))
    node.input[0] = tiled
    write_input(graph, node, 1, w[src], SUFFIX)
    if b is not None:
        write_input(graph, node, 2, b[src], SUFFIX)
    set_attr(node, "group", c * t)
    return src


def _pad_groups(graph: onnx.GraphProto, node: onnx.NodeProto, w: np.ndarray,
                b: np.ndarray | None, width: int) -> np.ndarray:
    """Zero filters (and bias) padding each group of a grouped conv to `width` output
    channels; returns the channel map (-1: padding)."""
    g = attr(node, "group", 1)
    r = w.shape[0] // g
    src = np.full((g, width), -1, np.int64)
    src[:, :r] = np.arange(g * r).reshape(g, r)
    src = src.reshape(-1)
    keep = src >= 0
    padded = np.zeros((g * width, *w.shape[1:]), w.dtype)
    padded[keep] = w[src[keep]]
    write_input(graph, node, 1, padded, SUFFIX)
    if b is not None:
        bias = np.zeros(g * width, b.dtype)
        bias[keep] = b[src[keep]]
        write_input(graph, node, 2, bias, SUFFIX)
    return src


def _readers(index: GraphIndex, name: str, channels: int) -> list[int] | None:
    """The outputs of each group-1 conv that reads `name` (through activations), or None
    where any reader needs the original channels (it is then left as it is)."""
    if name in index.outputs or name in index.subgraph_reads:
        return None
    outputs: list[int] = []
    for node in index.consumers.get(name, []):
        if node.input[0] != name or name in node.input[1:]:
            return None
        if node.op_type in PASS_THROUGH:
            rest = [i for i in node.input[1:] if i]
            more = (_readers(index, node.output[0], channels)
                    if all(index.const(i) is not None for i in rest) else None)
            if more is None:
                return None
            outputs += more
            continue
        found = conv_weights(node, index)
        if found is None or attr(node, "group", 1) != 1 or found[0].shape[1] != channels:
            return None
        outputs.append(found[0].shape[0])
    return outputs


def _propagate(graph: onnx.GraphProto, mapped: str, name: str, src: np.ndarray) -> None:
    """Let each reader of `name` (all of which _readers took) read `mapped`, whose channels
    follow the map `src`: an activation passes it on, a conv's weights absorb it."""
    index = GraphIndex(graph)
    for node in list(index.consumers.get(name, [])):
        node.input[0] = mapped
        if node.op_type in PASS_THROUGH:
            out_mapped, out = rename_output(graph, node, SUFFIX)
            _propagate(graph, out_mapped, out, src)
            continue
        w = index.const(node.input[1])
        absorbed = np.zeros((w.shape[0], len(src), *w.shape[2:]), w.dtype)
        absorbed[:, src >= 0] = w[:, src[src >= 0]]
        write_input(graph, node, 1, absorbed, SUFFIX)


def _rewrite(graph: onnx.GraphProto, node: onnx.NodeProto, lanes: int,
             report: PassReport) -> np.ndarray | None:
    """Rewrite one grouped conv whose vectors would gather; its channel map, or None."""
    index = GraphIndex(graph)
    found = conv_weights(node, index)
    if found is None:
        return None
    (w, b), g = found, attr(node, "group", 1)
    if g == w.shape[0]:
        return None  # depthwise: its vectors read whole vectors of inputs
    readers = _readers(index, node.output[0], w.shape[0])
    t = _multiplier(node, w)
    if t:
        if vector_length(g, lanes) <= vector_length(t, lanes):
            return None  # its channels take no wider vector than its groups (or none)
        what, width = f"depthwise x{t} t-major", 0
    else:
        r = w.shape[0] // g
        width = padded_width(r, int(np.prod(w.shape[1:])), sum(readers or []), lanes)
        if width == r:
            return None
        what = f"groups of {r}->{width}" if g > 1 else f"channels {r}->{width}"
    if readers is None:
        if g > 1:  # a group-1 conv is pad_channels' then, with a Slice back where it pays
            report.decline(node.name or node.output[0],
                           f"{what}: a reader needs the channels in their order")
        return None
    report.count(what)
    return _tile_multiplier(graph, node, w, b, t) if t else _pad_groups(graph, node, w, b, width)


def group_channels(model: onnx.ModelProto, *, lanes: int) -> tuple[onnx.ModelProto, PassReport]:
    """Multiplier depthwise convs t-major, grouped convs' groups padded to vectors of `lanes`
    (see the module docstring)."""
    out = onnx.ModelProto()
    out.CopyFrom(model)
    graph = out.graph
    report = PassReport("group_channels")
    if lanes < 4:
        return out, report
    for node in list(graph.node):
        if node.op_type != "Conv":
            continue
        src = _rewrite(graph, node, lanes, report)
        if src is not None:
            mapped, name = rename_output(graph, node, SUFFIX)
            _propagate(graph, mapped, name, src)
    if report.changed:
        tidy(graph)
    return out, report
