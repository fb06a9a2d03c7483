"""Latency-aware keep: a layer's rewrite stays only where its kernels are faster than the dense
conv's on the target.

Where the target runs on this machine (`Target.runs_here`), each rewritten conv and its pair
are compiled by edgec as two one-layer models (the layer's input shape, its weights, its
strides and pads) and timed here, alternately, in one process: both are edgec kernels on the
same thread pool, so neither runs beside another runtime's threads. Elsewhere the
decision is a cost model, said so in the report: MACs over the efficiency a form reaches on a
CPU (`EFFICIENCY`: depthwise convs are memory-bound and reach a fraction of a dense conv's
MACs per second).
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
from onnx import helper, numpy_helper

from edgec.compiler.passes.lowrank import factor, macs_ratio, replace

from .fit import LayerPlan

# MACs per second of each form relative to a dense conv's, for targets edgec cannot time here.
EFFICIENCY = {"dense": 1.0, "channel": 1.0, "grouped": 0.7, "separable": 0.25}
COST_MODEL = ("cost model: MACs / form efficiency (dense 1, channel 1, grouped 0.7, "
              "depthwise 0.25)")
SECONDS = 0.3  # timing per model per round
ROUNDS = 3


@dataclass(frozen=True)
class Decision:
    dense_ms: float | None  # measured; None with the cost model
    pair_ms: float | None
    speedup: float  # dense time / pair time (measured or modelled)
    keep: bool
    how: str  # "measured on <target>" or the cost model


def modelled(shape: tuple[int, ...], plan: LayerPlan) -> Decision:
    form = plan.form(shape[1])
    speedup = EFFICIENCY[form] / macs_ratio(shape, plan.groups, plan.rank)
    return Decision(None, None, speedup, speedup > 1.0, COST_MODEL)


def _one_layer(node: onnx.NodeProto, w: np.ndarray, in_shape: list[int],
               plan: LayerPlan | None) -> onnx.ModelProto:
    """A model of conv `node` alone (plan None) or of its pair for `plan` (plain SVD factors:
    the values do not change the time)."""
    conv = helper.make_node("Conv", ["x", "w"], ["y"], name="conv")
    conv.attribute.extend(a for a in node.attribute if a.name != "group")
    graph = helper.make_graph([conv], "layer", [helper.make_tensor_value_info("x", 1, in_shape)],
                              [helper.make_tensor_value_info("y", 1, None)],
                              [numpy_helper.from_array(w, "w")])
    if plan is not None:
        replace(graph, graph.node[0], factor(w, plan.groups, plan.rank,
                                             np.zeros(w.shape[0], w.dtype)))
        graph.initializer.remove(next(t for t in graph.initializer if t.name == "w"))
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return onnx.shape_inference.infer_shapes(model)


def measured(node: onnx.NodeProto, w: np.ndarray, in_shape: list[int], plan: LayerPlan,
             target: str) -> Decision:
    """Compile the dense conv and the pair for `target` (this machine) and time both."""
    from edgec import runtime
    from edgec.compiler import compile as compile_model
    from edgec.harness.latency import time_calls

    feed = {"x": np.random.default_rng(0).standard_normal(in_shape).astype(np.float32)}
    with tempfile.TemporaryDirectory(prefix="edgec-speed-") as tmp:
        calls = []
        for tag, p in (("dense", None), ("pair", plan)):
            src = Path(tmp) / f"{tag}.onnx"
            onnx.save(_one_layer(node, w, in_shape, p), src)
            compile_model(src, output=Path(tmp) / tag, target=target, validate=False,
                          latency=False)
            model = runtime.load(Path(tmp) / tag)
            calls.append(lambda m=model: m(**feed))
        runs: list[list[float]] = [[], []]
        for _ in range(ROUNDS):  # alternately, so a slow stretch of the machine slows both
            for times, call in zip(runs, calls):
                times.append(time_calls(call, SECONDS)["median_ms"])
        best = [min(times) for times in runs]
    return Decision(best[0], best[1], best[0] / best[1], best[1] < best[0],
                    f"measured on {target}")
