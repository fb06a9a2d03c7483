"""Grouped convs on the fast path: the forms a low-rank decomposition makes of a KxK conv, on
tiny graphs built with onnx.helper, against onnxruntime, for host and arm, every kernel taken by
an edgec rule (none left to TVM's default, no chain merged across a group):

    separable  depthwise KxK with channel multiplier T (group C, C*T outputs), then 1x1 + bias
    grouped    KxK in g groups of r outputs (1 < g < C, no bias), then 1x1 + bias
    channels   KxK C -> r (g = 1), then 1x1 + bias

each followed by Relu or a residual Add + Relu, the KxK conv keeping stride and pads. Then the
parts: onnx_level/group_channels (t-major multipliers, groups padded to vectors: exact), the
tiles that keep to one group (cpu/tiles.candidates), and the kernel's packed weights."""

from __future__ import annotations

import json
import shutil

import numpy as np
import onnx
import pytest
from onnx import helper, numpy_helper

from edgec import targets
from edgec.compiler import codegen
from edgec.compiler.codegen.cpu.schedules import RULES
from edgec.compiler.codegen.cpu.tiles import CpuShape, candidates, cpu_shape
from edgec.compiler.codegen.onnx_level.group_channels import group_channels, padded_width

from conftest import build_and_check, check_pass, random_const, save, tiny_model

AVX512 = CpuShape(lanes=16, registers=24, pointwise=True, columns=True)


def _form(kind: str, c: int, n: int, p: int, *, r: int = 0, stride: int = 1, hw: int = 8,
          residual: bool = False, prefix: bool = False) -> onnx.ModelProto:
    """`kind` ('separable': multiplier p; 'grouped': p groups of r; 'channels': r outputs) of a
    3x3 conv c -> n on an hw x hw map, then a 1x1 conv with bias, then Relu (or Add x + Relu).
    With `prefix`, a 1x1 conv + Relu first (the previous layer's decomposition), whose kernel
    must not merge with the form's KxK conv as a conv -> depthwise chain."""
    rng = np.random.default_rng(c * 100 + n + p + r)
    mid, group = {"separable": (c * p, c), "grouped": (p * r, p), "channels": (r, 1)}[kind]
    x = "x1" if prefix else "x"
    nodes = [helper.make_node("Relu", ["x0"], ["x1"])] if prefix else []
    inits = [random_const("w", (mid, c // group, 3, 3), rng),
             random_const("w1", (n, mid, 1, 1), rng), random_const("b1", (n,), rng)]
    if prefix:
        nodes.insert(0, helper.make_node("Conv", ["x", "w0"], ["x0"]))
        inits.append(random_const("w0", (c, c, 1, 1), rng))
    grouping = {"group": group} if group > 1 else {}  # as an exporter writes a plain conv
    nodes += [helper.make_node("Conv", [x, "w"], ["k"], kernel_shape=[3, 3],
                               strides=[stride] * 2, pads=[1] * 4, **grouping),
              helper.make_node("Conv", ["k", "w1", "b1"], ["s" if residual else "c"])]
    if residual:
        nodes.append(helper.make_node("Add", ["s", x], ["c"]))
    nodes.append(helper.make_node("Relu", ["c"], ["y"]))
    return tiny_model(nodes, [1, c, hw, hw], inits)


# (kind, c, n, p, r, stride, residual, prefix); the channel counts are odd for vectors on purpose
FORMS = {
    "separable-x2": ("separable", 16, 16, 2, 0, 1, False, False),
    "separable-x3-s2": ("separable", 16, 24, 3, 0, 2, False, False),
    "separable-x5-res": ("separable", 8, 8, 5, 0, 1, True, False),
    "separable-x9": ("separable", 16, 16, 9, 0, 1, False, False),
    "separable-x2-after-conv": ("separable", 16, 16, 2, 0, 1, False, True),
    "grouped-2x12": ("grouped", 16, 16, 2, 12, 1, False, False),
    "grouped-4x5-s2": ("grouped", 16, 24, 4, 5, 2, False, False),
    "grouped-4x6-res": ("grouped", 24, 24, 4, 6, 1, True, False),
    "grouped-8x3-res": ("grouped", 32, 32, 8, 3, 1, True, False),
    "grouped-4x16-s2": ("grouped", 32, 32, 4, 16, 2, False, False),
    "grouped-4x8-after-conv": ("grouped", 32, 32, 4, 8, 1, False, True),
    "grouped-2x20-after-conv": ("grouped", 16, 16, 2, 20, 1, False, True),
    "channels-12": ("channels", 16, 16, 1, 12, 1, False, False),
    "channels-7-s2-after-conv": ("channels", 16, 16, 1, 7, 2, False, True),
}
# rewritten by group_channels whatever the vector length (4, 8 or 16 lanes)
REWRITTEN = {"separable-x2", "separable-x3-s2", "separable-x5-res", "separable-x9",
             "separable-x2-after-conv", "grouped-4x5-s2", "grouped-4x6-res", "grouped-8x3-res",
             "channels-7-s2-after-conv"}


def _model(name: str) -> onnx.ModelProto:
    kind, c, n, p, r, stride, residual, prefix = FORMS[name]
    return _form(kind, c, n, p, r=r, stride=stride, residual=residual, prefix=prefix)


def _covered(kernels: dict[str, str]) -> None:
    """Every kernel by an edgec rule; every conv by a conv rule of its own (no conv merged as a
    chain's depthwise across groups: a grouped conv is neither half of a chain)."""
    assert kernels and set(kernels.values()) <= set(RULES), kernels
    convs = {k: how for k, how in kernels.items() if "conv" in k}
    assert convs and set(convs.values()) <= {"reduction_tile", "winograd", "group_shuffle"}, kernels


@pytest.mark.parametrize("name", FORMS)
def test_form_on_host_matches_onnxruntime_every_kernel_by_a_rule(name):
    lowering = build_and_check(_model(name))
    _covered(lowering.kernels)
    if name in REWRITTEN:  # the others, as this machine's vectors make worth it
        assert any(line.startswith("group_channels") for line in lowering.graph), lowering.graph


@pytest.mark.parametrize("name", FORMS)
def test_form_for_arm_every_kernel_by_a_rule(name):
    model = _model(name)
    shape = [d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim]
    lowering = codegen.Lowering()
    codegen.lower(model, targets.get("arm"), {"x": shape}, lowering)
    _covered(lowering.kernels)
    assert any(line.startswith("group_channels") for line in lowering.graph) \
        == (name in REWRITTEN), lowering.graph


@pytest.mark.skipif(shutil.which("qemu-aarch64") is None or shutil.which("aarch64-linux-gnu-g++")
                    is None, reason="qemu-user or the aarch64 cross toolchain is not installed")
@pytest.mark.parametrize("name", ["separable-x3-s2", "separable-x2-after-conv", "grouped-4x5-s2",
                                  "grouped-8x3-res"])
def test_form_for_arm_matches_onnxruntime_under_qemu(name, tmp_path):
    """compile validates an arm bundle under qemu against onnxruntime."""
    import edgec

    src = save(_model(name), tmp_path / "m.onnx")
    edgec.compile(src, output=tmp_path / "b", target="arm", bundle=True, latency=False)
    manifest = json.loads((tmp_path / "b" / "manifest.json").read_text())
    assert manifest["validation"]["ok"] and manifest["validation"]["device"].startswith("qemu")
    _covered(manifest["codegen"]["kernels"])


def test_multiplier_becomes_tile_and_a_t_major_depthwise():
    """C = 16, T = 3: Tile + a 48-channel depthwise, output t*16 + c the original's c*3 + t;
    the 1x1 conv reads the new order (its weights' columns follow it): exact, idempotent."""
    model = _form("separable", 16, 8, 3)
    out, report = check_pass(lambda m: group_channels(m, lanes=16), model,
                             {"Conv": 2, "Tile": 1, "Gather": 0})
    assert report.rewrites == {"depthwise x3 t-major": 1}
    dw, pw = [n for n in out.graph.node if n.op_type == "Conv"]
    assert next(a.i for a in dw.attribute if a.name == "group") == 48
    before, after = ({t.name: numpy_helper.to_array(t) for t in m.graph.initializer}
                     for m in (model, out))
    np.testing.assert_array_equal(after[dw.input[1]][1 * 16 + 5], before["w"][5 * 3 + 1])
    np.testing.assert_array_equal(after[pw.input[1]][:, 2 * 16 + 7], before["w1"][:, 7 * 3 + 2])


@pytest.mark.parametrize("lanes, r, width", [(16, 5, 8), (16, 12, 16), (16, 16, 16),
                                             (4, 6, 8), (4, 12, 12), (8, 3, 4)])
def test_groups_padded_to_vectors_with_zero_filters(lanes, r, width):
    """4 groups of r -> of `width` (zero filters), the 1x1 conv's matching input channels
    zero: the output is the conv's, exactly."""
    model = _form("grouped", 16, 16, 4, r=r, stride=2)
    out, report = check_pass(lambda m: group_channels(m, lanes=lanes), model,
                             {"Conv": 2, "Gather": 0})
    shapes = {t.name: list(t.dims) for t in out.graph.initializer}
    convs = [n for n in out.graph.node if n.op_type == "Conv"]
    assert shapes[convs[0].input[1]] == [4 * width, 4, 3, 3]
    assert shapes[convs[1].input[1]] == [16, 4 * width, 1, 1]
    assert report.changed == (width != r), report.summary()


@pytest.mark.parametrize("lanes, r, width", [(16, 7, 8), (16, 12, 16), (4, 12, 12)])
def test_group_1_conv_padded_where_its_reader_absorbs_it(lanes, r, width):
    """The channel decomposition's C -> r conv: one group, padded as a grouped conv's."""
    model = _form("channels", 16, 16, 1, r=r)
    out, report = check_pass(lambda m: group_channels(m, lanes=lanes), model, {"Conv": 2})
    shapes = {t.name: list(t.dims) for t in out.graph.initializer}
    assert shapes[out.graph.node[0].input[1]] == [width, 16, 3, 3]
    assert report.rewrites == ({f"channels {r}->{width}": 1} if width != r else {})


@pytest.mark.parametrize("group", [4, 1])
def test_declines_where_a_reader_needs_the_channel_order(group):
    """A conv read by an Add (or a graph output) keeps its channels: a Gather back would be a
    kernel of its own. Grouped, it says so; one group is left to pad_channels (which slices
    back where that pays) without a word."""
    rng = np.random.default_rng(0)
    nodes = [helper.make_node("Conv", ["x", "w"], ["k"], group=group, kernel_shape=[3, 3],
                              pads=[1] * 4),
             helper.make_node("Add", ["k", "x"], ["y"])]
    model = tiny_model(nodes, [1, 20, 6, 6], [random_const("w", (20, 20 // group, 3, 3), rng)])
    out, report = group_channels(model, lanes=16)
    assert not report.changed
    assert ("a reader needs the channels" in report.summary()) == (group > 1), report.summary()
    assert out.graph.SerializeToString() == model.graph.SerializeToString()


def test_multiplier_over_channels_no_vector_divides_is_left():
    """C = 6: a tiled input would not give whole vectors either."""
    out, report = group_channels(_form("separable", 6, 8, 3), lanes=16)
    assert not report.changed and not report.declined
    assert [n.op_type for n in out.graph.node].count("Tile") == 0


def test_padded_width_counts_the_conv_and_its_readers():
    # r = 24, 3x3 over 32 inputs, read by 64 outputs: 32 (2 vectors + a larger 1x1) beats 24
    # (3 half vectors); with a 1x1 that reads 24 channels by 2048 outputs, 24 stays
    assert padded_width(24, 288, 64, 16) == 32
    assert padded_width(24, 288, 2048, 16) == 24
    assert padded_width(5, 72, 64, 16) == 8  # as few conv vectors as 16, half the 1x1's inputs
    assert padded_width(16, 72, 64, 16) == 16


@pytest.mark.parametrize("channels, group, v, width", [(64, 16, 16, 16), (48, 24, 8, 24),
                                                        (40, 8, 8, 8), (64, 0, 16, 64)])
def test_tiles_keep_to_one_group(channels, group, v, width):
    """With `group`, a tile's u * v channels divide it, so each vector reads one broadcast."""
    got_v, shapes = candidates(16, channels, AVX512, 144, group=group)
    assert got_v == v and shapes
    assert all(width % (u * v) == 0 for _, u in shapes), shapes


@pytest.mark.parametrize("r", [5, 16])
def test_grouped_kernel_packs_its_weights_by_group(r):
    """The grouped conv's vector (its packed weights' last dim) divides its group (broadcast
    inputs) or holds whole groups (cpu/group_shuffle.py: a permute of the pixel's inputs),
    never part of one group and part of another (a gather)."""
    from tvm import tirx

    model = _form("grouped", 32, 32, 4, r=r)
    host = targets.get("host")
    lanes = cpu_shape(host.tvm_target()).lanes
    lowered = codegen.lower(model, host, {"x": [1, 32, 8, 8]})
    kernels = [f for gv, f in lowered.functions.items()
               if isinstance(f, tirx.PrimFunc) and "conv" in gv.name_hint]
    packed = {tuple(int(d) for d in p.shape) for f in kernels for p in f.params
              if len(p.shape) == 5 and [int(d) for d in p.shape][1:4] == [3, 3, 8]}
    width = padded_width(r, 72, 32, lanes)
    vector = next(iter(packed))[4] if len(packed) == 1 else 0
    assert vector and (width % vector == 0 or vector % width == 0), (packed, width)


def test_tune_variants_of_a_grouped_conv_keep_to_its_groups():
    """edgec tune's tiles for a grouped conv (cpu/knobs.py) keep within a group too."""
    from tvm import tirx

    from edgec.compiler.codegen.cpu.knobs import knob_sets
    from edgec.compiler.codegen.pipelines import fused

    host = targets.get("host")
    model = _form("grouped", 32, 32, 2, r=16)
    with host.tvm_target():
        mod = fused(host.tvm_target())(codegen.import_model(model, host, {"x": [1, 32, 8, 8]}))
    conv = next(f for gv, f in mod.functions_items()
                if isinstance(f, tirx.PrimFunc) and "conv" in gv.name_hint
                and any([int(d) for d in p.shape][-2:] == [16, 32] for p in f.params))
    tiles = [k.tile for k in knob_sets(conv, AVX512) if k.tile]
    assert tiles and all(u * 16 <= 16 for _, u in tiles), tiles
