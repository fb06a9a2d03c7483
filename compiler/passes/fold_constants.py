"""fold_constants: evaluate every node whose inputs are known at compile time.

Pattern: a node some output of which is read, whose inputs are all initializers or outputs
of already-folded nodes, or a `Shape`/`Size` whose input has a fully static shape. Rewrite:
the node's outputs become initializers holding the values onnx's reference evaluator
computes; the node is removed.

This is what turns exporter shape arithmetic (Paddle's and Keras' Shape -> Gather/Slice ->
Concat -> Reshape chains, PyTorch's flatten-by-shape) into plain constants once the dynamic dims
are pinned, so the TVM importer sees a static Reshape. The math is the op's own: folding is exact.

The folded values that something still reads (a node, a graph output, a subgraph) become
initializers; the initializers only folded nodes read go with them. Other unread initializers
are left for cleanup's dead-value sweep, which counts them.

Declines: nodes with a subgraph or a random output (no single value), QuantizeLinear /
DequantizeLinear (a quantized model keeps its QDQ pairs for the backend to see), and any node
whose output would be larger than MAX_FOLD_BYTES (folding must never blow up the model file).
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import helper, numpy_helper, shape_inference

from .graph import read_names
from .report import PassReport

MAX_FOLD_BYTES = 16 << 20
_NEVER_FOLD = {
    "QuantizeLinear", "DequantizeLinear", "RandomNormal", "RandomNormalLike", "RandomUniform",
    "RandomUniformLike", "Multinomial", "Bernoulli", "If", "Loop", "Scan",
}


def static_shapes(model: onnx.ModelProto) -> dict[str, list[int]]:
    """Every tensor whose shape onnx knows in full, from inputs, value_info, outputs, weights."""
    g = model.graph
    out: dict[str, list[int]] = {t.name: list(t.dims) for t in g.initializer}
    for vi in [*g.input, *g.value_info, *g.output]:
        t = vi.type.tensor_type
        if t.HasField("shape") and all(d.HasField("dim_value") for d in t.shape.dim):
            out[vi.name] = [d.dim_value for d in t.shape.dim]
    return out


def _evaluate(node: onnx.NodeProto, values: dict[str, np.ndarray], opset: list) -> list[np.ndarray]:
    from onnx.reference import ReferenceEvaluator

    inputs = [i for i in node.input if i]
    graph = helper.make_graph(
        [node], "fold",
        [helper.make_tensor_value_info(i, helper.np_dtype_to_tensor_dtype(values[i].dtype),
                                       values[i].shape) for i in inputs],
        [helper.make_tensor_value_info(o, onnx.TensorProto.UNDEFINED, None) for o in node.output],
    )
    model = helper.make_model(graph, opset_imports=opset)
    return ReferenceEvaluator(model).run(None, {i: values[i] for i in inputs})


def fold_constants(model: onnx.ModelProto) -> tuple[onnx.ModelProto, PassReport]:
    report = PassReport("fold_constants")
    model = shape_inference.infer_shapes(model, data_prop=True)
    g = model.graph
    shapes = static_shapes(model)
    values = {t.name: numpy_helper.to_array(t) for t in g.initializer}
    graph_outputs = {o.name for o in g.output}
    keep: list[onnx.NodeProto] = []
    new_inits: list[onnx.TensorProto] = []
    consumed: set[str] = set()  # inputs of folded nodes: dead now unless something else reads
    read = read_names(g)
    for node in g.node:
        result = None
        if not any(o in read for o in node.output):
            pass  # dead: cleanup's sweep removes and counts it
        elif node.op_type == "Shape" and node.input[0] in shapes:
            dims = np.array(shapes[node.input[0]], np.int64)
            attrs = {a.name: a.i for a in node.attribute}
            result = [dims[attrs.get("start", 0): attrs.get("end", len(dims))]]
        elif node.op_type == "Size" and node.input[0] in shapes:
            result = [np.array(int(np.prod(shapes[node.input[0]])), np.int64)]
        elif (node.op_type not in _NEVER_FOLD and node.domain in ("", "ai.onnx")
              and all(i in values for i in node.input if i)
              and not any(o in graph_outputs for o in node.output)):
            try:
                result = _evaluate(node, values, list(model.opset_import))
            except Exception as err:  # the evaluator lacks an op or rejects it: keep the node
                report.decline(node.name or node.op_type, type(err).__name__)
                result = None
        if result is not None and sum(np.asarray(r).nbytes for r in result) > MAX_FOLD_BYTES:
            report.decline(node.name or node.op_type, "output too large to fold")
            result = None
        if result is None:
            keep.append(node)
            continue
        for name, value in zip(node.output, result):
            value = np.asarray(value)
            values[name] = value
            shapes[name] = list(value.shape)
            new_inits.append(numpy_helper.from_array(value, name))
        consumed.update(node.input)
        report.count(node.op_type)
    if not report.changed:
        return model, report
    del g.node[:]
    g.node.extend(keep)
    used = read_names(g)
    folded_names = {t.name for t in new_inits}
    old = [t for t in g.initializer if t.name in used or t.name not in consumed]
    del g.initializer[:]
    g.initializer.extend(old + [t for t in new_inits if t.name in used])
    kept_vi = [vi for vi in g.value_info if vi.name not in folded_names]
    del g.value_info[:]
    g.value_info.extend(kept_vi)
    return model, report
