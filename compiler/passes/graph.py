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


def subgraph_reads(graph: onnx.GraphProto) -> set[str]:
    """Names read inside the subgraphs of `graph`'s nodes (If branches, Loop and Scan bodies, at
    any depth): a subgraph may read, or return as its output, any name of an enclosing scope.

    Names local to a subgraph are included too; a caller treats every one as read in `graph`,
    which keeps a value at worst, never drops one a body needs.
    """
    names: set[str] = set()
    for node in graph.node:
        for a in node.attribute:
            for sub in [a.g] if a.type == onnx.AttributeProto.GRAPH else list(a.graphs):
                names |= {i for n in sub.node for i in n.input if i}
                names |= {o.name for o in sub.output} | subgraph_reads(sub)
    return names


class GraphIndex:
    """Producer/consumer maps and initializer values of one graph, rebuilt after each rewrite.

    `consumers` holds this graph's own nodes; `subgraph_reads` the names a subgraph reads,
    which `uses` counts as one more use each (a rewrite must not rename or remove them).
    """

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
        self.subgraph_reads = subgraph_reads(graph)

    def const(self, name: str) -> np.ndarray | None:
        t = self.inits.get(name)
        return None if t is None or name in self.inputs else numpy_helper.to_array(t)

    def uses(self, name: str) -> int:
        """Consumers of a tensor, counting a graph output and reads in subgraphs as one more
        use each."""
        return (len(self.consumers.get(name, [])) + (name in self.outputs)
                + (name in self.subgraph_reads))


def set_const(graph: onnx.GraphProto, name: str, value: np.ndarray) -> str:
    """Add or replace the initializer `name` with `value`."""
    for i, t in enumerate(graph.initializer):
        if t.name == name:
            graph.initializer[i].CopyFrom(numpy_helper.from_array(value, name))
            return name
    graph.initializer.append(numpy_helper.from_array(value, name))
    return name


def replace_node(graph: onnx.GraphProto, node: onnx.NodeProto,
                 new: list[onnx.NodeProto]) -> None:
    """Put `new` (in order) where `node` stands, and remove `node`."""
    at = list(graph.node).index(node)
    graph.node.remove(node)
    for item in reversed(new):
        graph.node.insert(at, item)


def unique_name(graph: onnx.GraphProto, base: str) -> str:
    taken = {t.name for t in graph.initializer} | {o for n in graph.node for o in n.output}
    taken |= {i.name for i in graph.input}
    name, k = base, 0
    while name in taken:
        k += 1
        name = f"{base}_{k}"
    return name


def bypass_reason(index: GraphIndex, node: onnx.NodeProto) -> str | None:
    """Why `node` (first output equal to its first input) cannot be bypassed, else None: the
    graph's interface forbids it, or a subgraph reads one of the two names (rewiring renames
    them)."""
    src, dst = node.input[0], node.output[0]
    if src in index.subgraph_reads or dst in index.subgraph_reads:
        return "a subgraph reads its input or output"
    if dst in index.outputs:
        if src in index.inputs:
            return "connects a graph input to a graph output"
        if src in index.inits or src in index.outputs:
            return "connects a weight or another graph output to a graph output"
        if index.producer.get(src) is None:
            return "its input has no producer to rename"
    return None


def bypass(graph: onnx.GraphProto, node: onnx.NodeProto) -> str | None:
    """Remove a node whose first output equals its first input (Identity, Dropout, no-op
    Reshape). Returns None when done, else why not (bypass_reason), changing nothing."""
    src, dst = node.input[0], node.output[0]
    index = GraphIndex(graph)
    why = bypass_reason(index, node)
    if why is not None:
        return why
    if dst in index.outputs:
        # The graph output's name must survive: rename the producer's output instead.
        producer = index.producer[src]
        producer.output[list(producer.output).index(src)] = dst
        for n in index.consumers.get(src, []):
            n.input[:] = [dst if i == src else i for i in n.input]
    else:
        for n in index.consumers.get(dst, []):
            n.input[:] = [src if i == dst else i for i in n.input]
    graph.node.remove(node)
    return None


def read_names(graph: onnx.GraphProto) -> set[str]:
    """Every name `graph` reads: node inputs, graph outputs, subgraph reads, and its graph
    inputs (the interface; an initializer that is also a graph input is an overridable input
    and stays with it)."""
    names = {i for n in graph.node for i in n.input if i} | {o.name for o in graph.output}
    return names | {i.name for i in graph.input} | subgraph_reads(graph)


def drop_dead(graph: onnx.GraphProto) -> dict[str, int]:
    """Remove nodes none of whose outputs is read (Constant nodes among them), repeatedly, then
    initializers nothing reads (read_names). Returns what it removed, as report counts.

    A weight that a rewrite replaced (BN parameters folded into a conv, a Constant folded into
    an initializer) is otherwise kept in the file: dead weights are what make an optimized
    model larger than its input.
    """
    cut = {"nodes": 0, "Constant": 0}
    while True:
        index = GraphIndex(graph)
        dead = [n for n in graph.node if not any(index.uses(o) for o in n.output if o)]
        if not dead:
            break
        for n in dead:
            graph.node.remove(n)
            cut["Constant" if n.op_type == "Constant" else "nodes"] += 1
    used = read_names(graph)
    keep = [t for t in graph.initializer if t.name in used]
    removed = {"dead nodes removed": cut["nodes"], "dead Constant nodes removed": cut["Constant"],
               "dead initializers removed": len(graph.initializer) - len(keep)}
    if len(keep) != len(graph.initializer):
        del graph.initializer[:]
        graph.initializer.extend(keep)
    return {what: n for what, n in removed.items() if n}


def tidy(graph: onnx.GraphProto) -> None:
    """After rewrites that renamed or removed outputs: drop the shapes of names no node
    produces any more, then what nothing reads (drop_dead)."""
    names = {o for n in graph.node for o in n.output}
    keep = [v for v in graph.value_info if v.name in names]
    del graph.value_info[:]
    graph.value_info.extend(keep)
    drop_dead(graph)


def clear_value_info(model: onnx.ModelProto) -> onnx.ModelProto:
    """Drop intermediate shapes after a rewrite and infer them again."""
    del model.graph.value_info[:]
    return onnx.shape_inference.infer_shapes(model, data_prop=True)


def name_nodes(model: onnx.ModelProto) -> onnx.ModelProto:
    """Name every unnamed node "{op}_{position}" (unique), so plans and reports can refer to
    nodes by name."""
    taken = {n.name for n in model.graph.node if n.name}
    for i, node in enumerate(model.graph.node):
        if not node.name:
            name = f"{node.op_type}_{i}"
            while name in taken:
                name += "_"
            node.name = name
            taken.add(name)
    return model
