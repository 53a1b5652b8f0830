"""The nested containers forgegrad.func's transforms accept as inputs and outputs (torch's pytrees): tuples,
lists, dicts and namedtuples are nodes; everything else, None included, is a leaf."""
from __future__ import annotations

from typing import Any, List, Tuple


class Spec:
    """The structure of a pytree without its leaves: ``kind`` is None for a leaf, else the container type with
    its ``keys`` (dict keys, or None) and one child Spec per element."""
    __slots__ = ("kind", "keys", "children")

    def __init__(self, kind=None, keys=None, children=()):
        self.kind, self.keys, self.children = kind, keys, tuple(children)

    @property
    def is_leaf(self) -> bool:
        return self.kind is None

    def num_leaves(self) -> int:
        return 1 if self.kind is None else sum(c.num_leaves() for c in self.children)

    def __eq__(self, other) -> bool:
        return (isinstance(other, Spec) and self.kind is other.kind and self.keys == other.keys
                and self.children == other.children)

    def __hash__(self):
        return hash((self.kind, self.keys, self.children))

    def __repr__(self) -> str:
        if self.kind is None:
            return "*"
        inner = ", ".join(repr(c) if self.keys is None else f"{k!r}: {c!r}" for k, c in
                          zip(self.keys or [None] * len(self.children), self.children))
        return f"{self.kind.__name__}({inner})"


def _is_namedtuple(x) -> bool:
    return isinstance(x, tuple) and hasattr(type(x), "_fields")


LEAF = Spec()


def tree_flatten(tree) -> Tuple[List[Any], Spec]:
    """(the leaves in order, the structure)."""
    leaves: List[Any] = []
    append = leaves.append

    def walk(x):
        if isinstance(x, dict):
            keys = tuple(x)
            return Spec(type(x), keys, [walk(x[k]) for k in keys])
        if isinstance(x, (list, tuple)):
            return Spec(type(x), None, [walk(v) for v in x])
        append(x)
        return LEAF

    spec = walk(tree)
    return leaves, spec


def tree_unflatten(leaves, spec: Spec):
    """The pytree of structure ``spec`` with ``leaves`` put in, in order."""
    it = iter(leaves)

    def build(s: Spec):
        if s is LEAF or s.kind is None:
            return next(it)
        items = [next(it) if c is LEAF else build(c) for c in s.children]
        if s.keys is not None:
            return s.kind(zip(s.keys, items)) if s.kind is not dict else dict(zip(s.keys, items))
        if _is_namedtuple_type(s.kind):
            return s.kind(*items)
        return s.kind(items)

    return build(spec)


def _is_namedtuple_type(kind) -> bool:
    return issubclass(kind, tuple) and hasattr(kind, "_fields")


def tree_map(fn, tree):
    leaves, spec = tree_flatten(tree)
    return tree_unflatten([fn(x) for x in leaves], spec)


def broadcast_prefix(prefix, spec: Spec, is_leaf=lambda x: not isinstance(x, (tuple, list, dict))):
    """The leaves of ``prefix`` (a pytree matching a prefix of ``spec``; a leaf of it applies to the whole
    subtree under it) repeated out to ``spec``'s leaves, or None where the structures disagree."""
    out: List[Any] = []

    def walk(p, s: Spec) -> bool:
        if is_leaf(p):
            out.extend([p] * s.num_leaves())
            return True
        if s.kind is None or len(p) != len(s.children) or not isinstance(p, s.kind if s.keys is None else dict):
            return False
        if s.keys is not None:
            if set(p) != set(s.keys):
                return False
            return all(walk(p[k], c) for k, c in zip(s.keys, s.children))
        return all(walk(v, c) for v, c in zip(p, s.children))

    return out if walk(prefix, spec) else None
