"""Graph helpers shared by the passes: who produces and who consumes a tensor, constants by
name, rewiring a removed node's output onto its input, dropping what nothing uses."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import helper, numpy_helper


def attr(node: onnx.NodeProto, name: str, default=None):
    """The value of attribute `name` of `node`, or `default` when it is not set."""
    for a in node.attribute:
        if a.name == name:
            return helper.get_attribute_value(a)
    return default


def set_attr(node: onnx.NodeProto, name: str, value=None) -> None:
    """Set attribute `name` to `value`; `value` None removes it."""
    for a in list(node.attribute):
        if a.name == name:
            node.attribute.remove(a)
    if value is not None:
        node.attribute.append(helper.make_attribute(name, value))


class GraphIndex:
    """Producer/consumer maps and initializer values of one graph, rebuilt after each rewrite."""

    def __init__(self, graph: onnx.GraphProto):
        self.graph = graph
        self.producer = {o: n for n in graph.node for o in n.output if o}
        self.consumers: dict[str, list[onnx.NodeProto]] = {}
        for n in graph.node:
            for i in n.input:
                if i:
                    self.consumers.setdefault(i, []).append(n)
        self.inits = {t.name: t for t in graph.initializer}
        self.outputs = {o.name for o in graph.output}
        self.inputs = {i.name for i in graph.input}

    def const(self, name: str) -> np.ndarray | None:
        t = self.inits.get(name)
        return None if t is None or name in self.inputs else numpy_helper.to_array(t)

    def uses(self, name: str) -> int:
        """Consumers of a tensor, counting a graph output as one more use."""
        return len(self.consumers.get(name, [])) + (name in self.outputs)


def set_const(graph: onnx.GraphProto, name: str, value: np.ndarray) -> str:
    """Add or replace the initializer `name` with `value`."""
    for i, t in enumerate(graph.initializer):
        if t.name == name:
            graph.initializer[i].CopyFrom(numpy_helper.from_array(value, name))
            return name
    graph.initializer.append(numpy_helper.from_array(value, name))
    return name


def unique_name(graph: onnx.GraphProto, base: str) -> str:
    taken = {t.name for t in graph.initializer} | {o for n in graph.node for o in n.output}
    taken |= {i.name for i in graph.input}
    name, k = base, 0
    while name in taken:
        k += 1
        name = f"{base}_{k}"
    return name


def bypass(graph: onnx.GraphProto, node: onnx.NodeProto) -> bool:
    """Remove a node whose first output equals its first input (Identity, Dropout, no-op
    Reshape). Returns False, changing nothing, where the graph's interface forbids it."""
    src, dst = node.input[0], node.output[0]
    index = GraphIndex(graph)
    if dst in index.outputs:
        # The graph output's name must survive: rename the producer's output instead.
        if src in index.inputs or src in index.inits or src in index.outputs:
            return False
        producer = index.producer.get(src)
        if producer is None:
            return False
        producer.output[list(producer.output).index(src)] = dst
        for n in index.consumers.get(src, []):
            n.input[:] = [dst if i == src else i for i in n.input]
    else:
        for n in index.consumers.get(dst, []):
            n.input[:] = [src if i == dst else i for i in n.input]
    graph.node.remove(node)
    return True


def drop_dead(graph: onnx.GraphProto) -> int:
    """Remove nodes none of whose outputs is used, then unused initializers. Returns nodes cut."""
    cut = 0
    while True:
        index = GraphIndex(graph)
        dead = [n for n in graph.node if not any(index.uses(o) for o in n.output if o)]
        if not dead:
            break
        for n in dead:
            graph.node.remove(n)
        cut += len(dead)
    used = {i for n in graph.node for i in n.input} | {o.name for o in graph.output}
    used |= {i.name for i in graph.input}
    keep = [t for t in graph.initializer if t.name in used]
    if len(keep) != len(graph.initializer):
        del graph.initializer[:]
        graph.initializer.extend(keep)
    return cut


def clear_value_info(model: onnx.ModelProto) -> onnx.ModelProto:
    """Drop intermediate shapes after a rewrite and infer them again."""
    del model.graph.value_info[:]
    return onnx.shape_inference.infer_shapes(model, data_prop=True)
