"""The nested-checkpoint layout behind ``forgegrad.save`` / ``forgegrad.load``.

A nested state (``{"model": ..., "optimizer": opt.state_dict(), "epoch": 3}``) is stored as a
safetensors file whose tensors are the arrays of the state, under unique dotted names
("optimizer.state.0.exp_avg"), and whose header metadata holds one reserved entry,
``"forgegrad.structure"``: a strict JSON document (no NaN/Infinity tokens)::

    {"format": "forgegrad.nested", "version": 1, "root": NODE}

where a NODE is a JSON null / bool / int / float / string (that python scalar), or an object with
exactly one tag:

    {"tensor": "<name of a tensor in the file>"}      a numpy array
    {"float": "inf" | "-inf" | "nan"}                 a non-finite float
    {"list": [NODE, ...]}  {"tuple": [NODE, ...]}     a list / a tuple
    {"dict": [[KEY, NODE], ...]}                      a dict in insertion order; KEY is a JSON
                                                      string or integer (python str / int keys)
    {"sparse_coo": {"indices": NODE, "values": NODE,  a forgegrad sparse COO tensor (its arrays are
                    "size": [int, ...], "coalesced": b}}  tensors of the file), rebuilt and checked by
    {"sparse_csr": {"crow_indices": NODE, "col_indices":  forgegrad.sparse_coo_tensor / sparse_csr_tensor
                    NODE, "values": NODE, "size": [m, n]}}

Decoding only builds dicts, lists, tuples, scalars and the file's arrays: nothing is imported,
constructed by name or evaluated, so a tampered file can at worst be rejected with ValueError.
"""
from __future__ import annotations

import json
import math
from collections.abc import Mapping
from typing import Callable, Dict, Tuple

import numpy as np

from .tensor import Tensor

STRUCTURE_KEY = "forgegrad.structure"
FORMAT = "forgegrad.nested"
VERSION = 1
MAX_DEPTH = 256  # far beyond any real state; keeps save and load away from Python's recursion limit

_NONFINITE = {"inf": math.inf, "-inf": -math.inf, "nan": math.nan}
_SUPPORTED = ("a forgegrad Tensor/Parameter, a numpy array, a dict (str or int keys), a list, a tuple, "
              "or an int/float/bool/str/None")


class StructureError(ValueError):
    """The reserved structure entry of a file is malformed (raised by ``decode``)."""


def path_str(path: Tuple) -> str:
    """A key path as python subscripts, e.g. ``['optimizer']['state'][0]['exp_avg']``."""
    return "".join(f"[{k!r}]" for k in path) or "<root>"


def is_array_leaf(value) -> bool:
    """Tensors, Parameters and numpy arrays / numpy scalars (np.str_/np.bytes_ are strings, not arrays)."""
    if isinstance(value, Tensor):
        return True
    return isinstance(value, (np.ndarray, np.generic)) and not isinstance(value, (str, bytes))


def is_flat(state: Mapping) -> bool:
    """A str -> array mapping: saved exactly as before nested checkpoints existed (no structure entry). A sparse
    tensor needs the structure (its arrays and size), so a state holding one is nested."""
    return all(isinstance(k, str) and is_array_leaf(v) and not _is_sparse(v) for k, v in state.items())


def _is_sparse(value) -> bool:
    return isinstance(value, Tensor) and getattr(type(value._data), "_is_sparse_storage", False)


def _check_key(key, path: Tuple):
    if isinstance(key, str):
        return key
    if isinstance(key, (int, np.integer)) and not isinstance(key, (bool, np.bool_)):
        return int(key)
    raise TypeError(f"forgegrad.save: keys must be str or int, got {type(key).__name__} key {key!r} at "
                    f"{path_str(path)}")


class _Encoder:
    def __init__(self, as_array: Callable[[str, object], np.ndarray]):
        self._as_array = as_array
        self.arrays: Dict[str, np.ndarray] = {}
        self._open = set()  # ids of the containers being encoded: detects reference cycles

    def _name(self, path: Tuple) -> str:
        base = ".".join(str(k) for k in path) or "_"
        name, n = base, 1
        while name in self.arrays:  # "a.b" the key vs a -> b, or 0 vs "0": keep names unique
            n += 1
            name = f"{base}#{n}"
        return name

    def _sparse(self, value, path: Tuple):
        d = value._data
        if d.layout_name == "sparse_csr":
            parts = {"crow_indices": d.crow, "col_indices": d.col, "values": d.values}
        else:
            parts = {"indices": d.indices, "values": d.values}
        body = {k: self.node(arr, path + (k,)) for k, arr in parts.items()}
        body["size"] = list(d.shape)
        if d.layout_name == "sparse_coo":
            body["coalesced"] = bool(d.coalesced)
        return {d.layout_name: body}

    def node(self, value, path: Tuple):
        if _is_sparse(value):
            return self._sparse(value, path)
        if is_array_leaf(value):
            name = self._name(path)
            self.arrays[name] = self._as_array(path_str(path), value)
            return {"tensor": name}
        if value is None or isinstance(value, bool):
            return value
        if isinstance(value, str):
            return str(value)
        if isinstance(value, int):
            return int(value)
        if isinstance(value, float):
            v = float(value)
            return v if math.isfinite(v) else {"float": "nan" if math.isnan(v) else ("inf" if v > 0 else "-inf")}
        if isinstance(value, (Mapping, list, tuple)):
            if len(path) >= MAX_DEPTH:
                raise ValueError(f"forgegrad.save: the state is nested deeper than {MAX_DEPTH} levels at "
                                 f"{path_str(path[:3])}...")
            if id(value) in self._open:
                raise ValueError(f"forgegrad.save: the {type(value).__name__} at {path_str(path)} contains itself "
                                 "(a reference cycle cannot be saved)")
            self._open.add(id(value))
            try:
                if isinstance(value, Mapping):
                    items = []
                    for k, v in value.items():
                        k = _check_key(k, path)
                        items.append([k, self.node(v, path + (k,))])
                    return {"dict": items}
                tag = "tuple" if isinstance(value, tuple) else "list"
                return {tag: [self.node(v, path + (i,)) for i, v in enumerate(value)]}
            finally:
                self._open.discard(id(value))
        raise TypeError(f"forgegrad.save: value at {path_str(path)} is a {type(value).__name__}, which cannot be "
                        f"saved; expected {_SUPPORTED}")


def encode(state: Mapping, as_array: Callable[[str, object], np.ndarray]) -> Tuple[Dict[str, np.ndarray], str]:
    """(name -> array, structure JSON) for a nested state; ``as_array(path, value)`` validates array leaves.

    Raises TypeError naming the key path of an unsupported value or key, ValueError for a cycle.
    """
    enc = _Encoder(as_array)
    root = enc.node(state, ())
    doc = {"format": FORMAT, "version": VERSION, "root": root}
    return enc.arrays, json.dumps(doc, allow_nan=False, separators=(",", ":"))


def _reject_constant(token: str):
    raise StructureError(f"non-standard JSON constant {token}")


class _Decoder:
    def __init__(self, arrays: Mapping[str, np.ndarray]):
        self._arrays = arrays
        self.used = set()

    def node(self, x, depth: int):
        if x is None or isinstance(x, (bool, str, int, float)):
            return x
        if depth > MAX_DEPTH:
            raise StructureError(f"nested deeper than {MAX_DEPTH} levels")
        if not isinstance(x, dict) or len(x) != 1:
            raise StructureError(f"expected a scalar or a one-tag object, got {_short(x)}")
        (tag, body), = x.items()
        if tag == "tensor":
            if not isinstance(body, str) or body not in self._arrays:
                raise StructureError(f"reference to a tensor that is not in the file: {_short(body)}")
            if body in self.used:
                raise StructureError(f"tensor {body!r} is referenced more than once")
            self.used.add(body)
            arr = self._arrays[body]
            if not isinstance(arr, np.ndarray):  # a Tensor placed by load(map_location=...)
                return arr
            return arr if arr.flags.writeable else arr.copy()
        if tag == "float":
            if not isinstance(body, str) or body not in _NONFINITE:
                raise StructureError(f"bad float {_short(body)}")
            return _NONFINITE[body]
        if tag in ("list", "tuple"):
            if not isinstance(body, list):
                raise StructureError(f"{tag} body must be a JSON array, got {_short(body)}")
            items = [self.node(v, depth + 1) for v in body]
            return tuple(items) if tag == "tuple" else items
        if tag == "dict":
            if not isinstance(body, list):
                raise StructureError(f"dict body must be a JSON array of [key, value] pairs, got {_short(body)}")
            out = {}
            for pair in body:
                if not isinstance(pair, list) or len(pair) != 2:
                    raise StructureError(f"dict entry must be a [key, value] pair, got {_short(pair)}")
                k, v = pair
                if isinstance(k, bool) or not isinstance(k, (str, int)):
                    raise StructureError(f"dict key must be a string or an integer, got {_short(k)}")
                if k in out:
                    raise StructureError(f"duplicate dict key {k!r}")
                out[k] = self.node(v, depth + 1)
            return out
        if tag in ("sparse_coo", "sparse_csr"):
            return self._sparse(tag, body, depth)
        raise StructureError(f"unknown tag {_short(tag)}")

    def _sparse(self, tag: str, body, depth: int):
        """A sparse tensor from its arrays, checked by its constructor (a tampered file raises StructureError)."""
        from . import sparse
        parts = ("indices", "values") if tag == "sparse_coo" else ("crow_indices", "col_indices", "values")
        extra = ("coalesced",) if tag == "sparse_coo" else ()
        if not isinstance(body, dict) or set(body) != set(parts + ("size",) + extra):
            raise StructureError(f"{tag} body must hold {', '.join(parts + ('size',) + extra)}, got {_short(body)}")
        size = body["size"]
        if not isinstance(size, list) or any(isinstance(n, bool) or not isinstance(n, int) for n in size):
            raise StructureError(f"{tag} size must be a list of ints, got {_short(size)}")
        arrays = []
        for k in parts:
            arr = self.node(body[k], depth + 1)
            arrays.append(arr._data if isinstance(arr, Tensor) else arr)
        make = sparse.sparse_coo_tensor if tag == "sparse_coo" else sparse.sparse_csr_tensor
        try:
            t = make(*arrays, tuple(size))
        except (ValueError, TypeError, IndexError, RuntimeError) as e:
            raise StructureError(f"{tag}: {e}") from None
        if tag == "sparse_coo" and body["coalesced"] is True:
            t = t.coalesce()  # the saved entries were unique and sorted: the same tensor, flagged coalesced
        return t


def _short(x) -> str:
    s = repr(x)
    return s if len(s) <= 80 else s[:77] + "..."


def decode(text, arrays: Mapping[str, np.ndarray]) -> dict:
    """Rebuild the saved state from the structure JSON and the file's arrays; StructureError if malformed."""
    if not isinstance(text, str):
        raise StructureError("the entry is not a string")
    try:
        doc = json.loads(text, parse_constant=_reject_constant)
    except RecursionError:
        raise StructureError("nested too deeply") from None
    except ValueError as e:  # json.JSONDecodeError, and StructureError from _reject_constant
        raise StructureError(f"not valid JSON ({e})") from None
    if not isinstance(doc, dict) or doc.get("format") != FORMAT or "root" not in doc:
        raise StructureError(f"expected an object with format {FORMAT!r} and a root")
    version = doc.get("version")
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise StructureError(f"bad version {_short(version)}")
    if version > VERSION:
        raise StructureError(f"structure version {version} was written by a newer forgegrad (this one reads "
                             f"version {VERSION})")
    dec = _Decoder(arrays)
    try:
        root = dec.node(doc["root"], 0)
    except RecursionError:
        raise StructureError("nested too deeply") from None
    if not isinstance(root, dict):
        raise StructureError("the root must be a dict")
    unused = sorted(set(arrays) - dec.used)
    if unused:
        raise StructureError(f"tensors not referenced by the structure: {_short(unused)}")
    return root
