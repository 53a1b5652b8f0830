"""Edits of a traced ONNX graph before it is written: pruning what no output reads (optional outputs too) and
renaming a value everywhere, subgraphs (a Loop's body) included."""
from __future__ import annotations

from typing import Sequence


def prune(nodes, initializers, outputs: Sequence[str]):
    """Drop nodes and initializers that no graph output depends on (e.g. a loss computed in forward)."""
    needed = set(outputs)
    kept = []
    for n in reversed(nodes):
        if any(o in needed for o in n.output):
            kept.append(n)
            needed.update(i for i in _inputs_with_subgraphs(n) if i)
    kept.reverse()
    for n in kept:  # optional outputs nobody reads are not computed (MaxPool's Indices, RNN states)
        if n.op_type in _OPTIONAL_OUTPUTS:
            first = _OPTIONAL_OUTPUTS[n.op_type]
            outs = [o if (k < first or o in needed) else "" for k, o in enumerate(n.output)]
            while len(outs) > 1 and outs[-1] == "":
                outs.pop()
            if not any(outs):  # keep one output so the node stays meaningful
                outs = [n.output[0]]
            del n.output[:]
            n.output.extend(outs)
    return kept, [t for t in initializers if t.name in needed]


# op type -> index of its first optional output
_OPTIONAL_OUTPUTS = {"MaxPool": 1, "LSTM": 0, "GRU": 0, "RNN": 0}


def _subgraphs(node):
    """The graphs held in a node's attributes (a Loop's body)."""
    for a in node.attribute:
        if a.HasField("g"):
            yield a.g
        yield from a.graphs


def _inputs_with_subgraphs(node):
    """A node's inputs and every value its subgraphs read (outer-scope values included)."""
    yield from node.input
    for g in _subgraphs(node):
        for n in g.node:
            yield from _inputs_with_subgraphs(n)


def rename(nodes, old: str, new: str) -> None:
    for n in nodes:
        for k, v in enumerate(n.output):
            if v == old:
                n.output[k] = new
        for k, v in enumerate(n.input):
            if v == old:
                n.input[k] = new
        for g in _subgraphs(n):  # a subgraph may read the value from the outer scope
            rename(g.node, old, new)
