"""passes/grouped.py: a conv as a grouped KxK conv + 1x1 of low rank; exact at full rank against
onnxruntime for every group count and for 1x1 convs, MACs as the formula says, the cases it
must decline, idempotence."""

from __future__ import annotations

import onnx
import pytest
from test_separable import _conv_model, _feed, _rel_err

from edgec.compiler import analysis, passes
from edgec.compiler.passes import GroupedOptions, grouped

from conftest import ort_run


def _groups(model):
    return [next((a.i for a in n.attribute if a.name == "group"), 1)
            for n in model.graph.node if n.op_type == "Conv"]


@pytest.mark.parametrize("groups,k", [(1, 3), (2, 3), (4, 3), (8, 3), (1, 1), (2, 1)])
def test_full_rank_is_exact(groups, k):
    model = _conv_model(k=k, pads=(k // 2,) * 4)
    out, report = grouped(model, GroupedOptions(groups=groups, only_cheaper=False))
    assert report.rewrites == {"conv->grouped+1x1": 1}
    assert _groups(out) == [groups, 1]
    onnx.checker.check_model(out, full_check=True)
    feed = _feed(model)
    assert _rel_err(ort_run(out, feed)[0], ort_run(model, feed)[0]) < 1e-5


@pytest.mark.parametrize("groups,rank", [(1, 6), (2, 4), (4, 2)])
def test_macs_follow_the_formula_and_error_falls_with_rank(groups, rank):
    model = _conv_model(n=48, c=16)
    dense = analysis.analyze(model).macs
    out, _ = grouped(model, GroupedOptions(groups=groups, rank=rank))
    # r/N + g*r/(C*K^2), over the dense conv's MACs (its bias adds nothing here)
    assert analysis.analyze(out).macs / dense == pytest.approx(
        rank / 48 + groups * rank / (16 * 9), rel=0.02)
    feed = _feed(model)
    want = ort_run(model, feed)[0]
    errs = [_rel_err(ort_run(grouped(model, GroupedOptions(groups=groups, rank=r))[0],
                             feed)[0], want) for r in (rank, 2 * rank)]
    assert errs[0] > errs[1]


@pytest.mark.parametrize("model,opts,why", [
    (_conv_model(n=8, c=8, group=8), GroupedOptions(), "already grouped or depthwise"),
    (_conv_model(c=6), GroupedOptions(groups=4), "4 groups do not divide its 6 input channels"),
    (_conv_model(n=8, c=8), GroupedOptions(), "saves no MACs"),
])
def test_declines_what_it_must_not_rewrite(model, opts, why):
    out, report = grouped(model, opts)
    assert not report.changed and why in report.declined[0]
    assert [n.op_type for n in out.graph.node] == ["Conv"]


def test_idempotent_its_own_factors_are_declined():
    once, _ = grouped(_conv_model(), GroupedOptions(groups=2, only_cheaper=False))
    twice, report = grouped(once, GroupedOptions(groups=2, only_cheaper=False))
    assert not report.changed and all("low-rank factor already" in d for d in report.declined)
    assert len(twice.graph.node) == len(once.graph.node)


def test_energy_picks_a_rank_per_group():
    model = _conv_model(n=48, c=16)
    _, full = grouped(model, GroupedOptions(groups=2, energy=1.0))
    assert not full.changed  # all the energy: full rank, no MACs saved
    _, half = grouped(model, GroupedOptions(groups=2, energy=0.5))
    assert half.changed and "rank" in next(iter(half.rewrites))


def test_runs_only_where_named():
    assert "grouped" not in passes.select() and not passes.PASSES["grouped"].exact
    _, reports = passes.run_passes(_conv_model(n=48, c=16), ["grouped"],
                                   {"grouped": GroupedOptions(groups=1, rank=4)})
    assert reports[0].rewrites == {"conv->grouped+1x1 rank 4": 1}
