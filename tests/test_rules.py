"""The pass framework: Pass metadata in the registry, and rules (match -> check -> rewrite)
whose every declined match is reported with its reason."""

from __future__ import annotations

import numpy as np
from onnx import helper

from edgec.compiler import passes
from edgec.compiler.passes import PassReport, Rule, apply_rules

from conftest import tiny_model


def _relu_chain():
    return tiny_model([helper.make_node("Relu", ["x"], ["a"], name="r1"),
                       helper.make_node("Relu", ["a"], ["b"], name="r2"),
                       helper.make_node("Sigmoid", ["b"], ["y"], name="s")], [1, 4])


def _to(op: str):
    def rewrite(node, index):
        node.op_type = op
    return rewrite


def test_first_passing_rule_rewrites_and_declines_say_why():
    model = _relu_chain()
    report = PassReport("demo")
    only_r2 = Rule("relu->tanh", lambda n, i: n.op_type == "Relu",
                   lambda n, i: None if n.name == "r2" else "not r2", _to("Tanh"))
    apply_rules(model.graph, [only_r2], report)
    assert [n.op_type for n in model.graph.node] == ["Relu", "Tanh", "Sigmoid"]
    assert report.rewrites == {"relu->tanh": 1}
    assert report.declined == ["r1: not r2"]  # the Sigmoid never matched: nothing to say


def test_fallback_reports_why_the_better_rules_declined():
    model = _relu_chain()
    report = PassReport("demo")
    better = Rule("relu->tanh", lambda n, i: n.op_type == "Relu", lambda n, i: "too wide",
                  _to("Tanh"))
    same_reason = Rule("relu->elu", lambda n, i: n.op_type == "Relu", lambda n, i: "too wide",
                       _to("Elu"))
    lesser = Rule("relu->clip", lambda n, i: n.op_type == "Relu", lambda n, i: None,
                  _to("Clip"), fallback="Clip")
    apply_rules(model.graph, [better, same_reason, lesser], report)
    assert report.rewrites == {"relu->clip": 2}
    assert report.declined == ["r1: became Clip: too wide", "r2: became Clip: too wide"]


def test_registry_holds_named_passes_with_metadata():
    for name, p in passes.PASSES.items():
        assert p.name == name and p.summary and p.summary != name and not p.needs_data
    assert [n for n, p in passes.PASSES.items() if p.exact] == ["cleanup", "fold_batchnorm"]
    assert passes.PASSES["separable"].options is passes.SeparableOptions
    model = tiny_model([helper.make_node("Identity", ["x"], ["y"])], [1, 4])
    out, report = passes.PASSES["cleanup"](model)
    assert isinstance(report, PassReport)


def test_list_passes_says_exact_or_lossy(cli):
    code, out, _ = cli("compile", "--list-passes")
    assert code == 0 and all("[exact" in line or "[lossy" in line for line in out.splitlines())
    assert np.all([line.split()[0] in passes.PASSES for line in out.splitlines()])
