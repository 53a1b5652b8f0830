"""The mutations a fuzz case applies to a valid call's arguments (runs inside the child interpreter).

A mutation is ``[kind, which, param]``: ``kind`` one of ARRAY_KINDS (applied to the array argument
``which`` modulo their number, arrays inside lists included), ALIAS_KINDS (two array arguments of one
shape made to share memory) or "scalar" (the non-array argument ``which`` replaced by a value of
another type or a bad value; ``param`` picks which). Each replacement of a scalar has a class:
"same" (an equal value of another type: the call must give the plain call's result), "wrong" (a
value of a type the parameter does not take: the call must raise) or "value" (a bad value of the
right type: the call must raise or return normally).
"""
from __future__ import annotations

import os

import numpy as np

DTYPES = ("float64", "float16", "int32", "int64", "bool", "complex64", "object", "uint8")
ARRAY_KINDS = ("dtype", "zero_dim", "drop_axis", "add_axis", "one_dim", "grow_dim", "huge", "overflow",
               "noncontig", "negative", "fortran", "broadcast0", "unaligned", "nan", "inf", "ninf", "bigval",
               "int_oob", "readonly", "scalar0d")
ALIAS_KINDS = ("alias", "overlap")
KINDS = ARRAY_KINDS + ALIAS_KINDS + ("scalar",)
# ops compute on a huge zero-stride view in numpy (no copy), kernels must refuse or copy it: set for ops
BOUNDED_HUGE = False
# the elements of an op's bounded huge input: an op may legitimately compute on it (a reduction, an
# elementwise result of that size, conv_transpose2d's 5x larger output, nanquantile's 4 rows per
# quantile), which 2**40 would make take hours and 2**31 take 8 GB. Under ASan + UBSan
# (FORGEGRAD_FUZZ_SANITIZED=1, tools/sanitize.sh) 2**22: such valid inputs are checked there for
# what the kernels do with them, at a size that fits the sanitizers' time and memory; the invalid
# sizes (int32-overflowing ones, for the kernels and bindings) stay as they are.
SANITIZED = os.environ.get("FORGEGRAD_FUZZ_SANITIZED") == "1"
BOUNDED_HUGE_ELEMENTS = 2 ** 22 if SANITIZED else 2 ** 26


class NoReference(Exception):
    """The canonical call cannot be formed (complex values, a huge view...): the result is unverified."""


def _replacements(v):
    """[(value, class)] for a scalar argument of value v."""
    if isinstance(v, (bool, np.bool_)):
        # pybind11 (the _C bindings) takes None as False, as bool(None) is; the Python layer refuses it
        return [(np.bool_(v), "same"), (int(v), "same"), ("True", "wrong"), (None, "value" if v else "same"),
                (1.0, "value"), ([v], "wrong"), (2, "value")]
    if isinstance(v, (int, np.integer)):
        v = int(v)
        return [(np.int64(v) if -2 ** 63 <= v < 2 ** 63 else v, "same"), (float(v), "value"), (True, "value"),
                ("1", "wrong"), (None, "wrong"),
                # [v]: torch's int-or-list parameters (stride, padding...) take a one-element list as v
                ([v], "same"), (v + 0.5, "wrong"), (-1, "value"), (0, "value"), (2 ** 31, "value"),
                (2 ** 63, "value"), (-2 ** 63, "value"), (float("nan"), "wrong"), (complex(v, 1), "wrong")]
    if isinstance(v, (float, np.floating)):
        v = float(v)
        return [(np.float64(v), "same"), ("0.1", "wrong"), (None, "wrong"), ([v], "wrong"), (True, "value"),
                (float("nan"), "value"), (float("inf"), "value"), (-float("inf"), "value"), (-v, "value"),
                (0.0, "value"), (1e300, "value"), (complex(v, 1), "wrong"), (2 ** 70, "value")]
    if isinstance(v, (tuple, list)) and all(isinstance(x, (int, np.integer)) and not isinstance(x, bool) for x in v):
        t = tuple(int(x) for x in v)
        return [(list(t), "same"), (str(t), "wrong"), (None, "value"), (t[:-1], "value"), (t + t[:1], "value"),
                (tuple(-x - 1 for x in t), "value"), (tuple(0 for _ in t), "value"),
                (tuple(2 ** 62 for _ in t), "value"), (tuple(2 ** 31 - 1 for _ in t), "value"),
                (tuple(float(x) + 0.5 for x in t), "wrong"), (tuple(True for _ in t), "value"),
                (tuple(str(x) for x in t), "wrong")]
    if isinstance(v, str):
        # "same" / "valid" are paddings of int-or-str parameters (torch's conv padding): an int is a value there
        int_class = "value" if v in ("same", "valid") else "wrong"
        return [("bogus", "value"), ("", "value"), (v.upper(), "value"), (None, "value"), (1, int_class),
                ([v], "wrong")]
    if v is None:
        return [("x", "value"), (1, "value"), (1.5, "value"), (np.zeros(3, np.float32), "value")]
    return [("junk", "value"), (None, "value")]


# ---- walking the arguments ------------------------------------------------------------------------
def array_slots(args):
    """[(container, key)] of every ndarray in args (a list), looking one level into lists/tuples."""
    slots = []
    for i, a in enumerate(args):
        if isinstance(a, np.ndarray):
            slots.append((args, i))
        elif isinstance(a, list):
            slots += [(a, j) for j, x in enumerate(a) if isinstance(x, np.ndarray)]
    return slots


def scalar_slots(args, kwargs):
    slots = [(args, i) for i, a in enumerate(args) if not isinstance(a, (np.ndarray, list)) or
             (isinstance(a, list) and not any(isinstance(x, np.ndarray) for x in a))]
    slots += [(kwargs, k) for k, a in sorted(kwargs.items()) if not isinstance(a, np.ndarray)]
    return slots


def _injected(a, rng, value):
    a = np.array(a, copy=True)
    if a.size and a.dtype.kind == "f":
        flat = a.reshape(-1)
        idx = rng.choice(a.size, size=max(1, a.size // 5), replace=False)
        flat[idx] = value
    return a


def mutate_array(a, kind, param, rng):
    """A new array (or view) from ``a`` (returned as is when the kind does not apply)."""
    nd = a.ndim
    axis = param % nd if nd else 0
    if kind == "dtype":
        dt = DTYPES[param % len(DTYPES)]
        if dt == "complex64":
            return (a + 1j * (a + 1)).astype(np.complex64)
        if dt == "object":
            return a.astype(object)
        return a.astype(dt)
    if kind == "zero_dim" and nd:
        return np.ascontiguousarray(np.take(a, [], axis=axis))
    if kind == "drop_axis" and nd:
        return np.ascontiguousarray(np.take(a, 0, axis=axis)) if a.shape[axis] else np.sum(a, axis=axis)
    if kind == "add_axis":
        return np.ascontiguousarray(np.expand_dims(a, param % (nd + 1)))
    if kind == "one_dim" and nd:
        return np.ascontiguousarray(np.take(a, [0] if a.shape[axis] else [], axis=axis))
    if kind == "grow_dim" and nd:
        extra = np.take(a, [0], axis=axis) if a.shape[axis] else np.zeros_like(np.take(a, [], axis=axis))
        return np.ascontiguousarray(np.concatenate([a, extra], axis=axis)) if a.shape[axis] else a
    if kind in ("huge", "overflow"):
        one = a.reshape(-1)[:1] if a.size else np.zeros(1, a.dtype)
        shape = list(a.shape) or [1]
        if BOUNDED_HUGE:  # the int32-overflowing sizes go to the kernels and bindings, which refuse or copy them
            others = max(1, int(np.prod(shape)) // max(1, shape[axis]))
            shape[axis] = max(1, BOUNDED_HUGE_ELEMENTS // others + 1)
        else:
            shape[axis] = 2 ** 40 if kind == "huge" else 2 ** 31 + 1
            if kind == "overflow" and len(shape) > 1:
                shape[(axis + 1) % len(shape)] = 2 ** 20  # int32 products overflow; the size fits numpy
        return np.broadcast_to(one.reshape((1,) * len(shape)), tuple(shape))
    if kind == "noncontig" and nd:
        big = np.zeros(a.shape[:-1] + (a.shape[-1] * 2 + 1,), a.dtype)
        view = big[..., 1::2][..., :a.shape[-1]] if param % 2 else big[..., :2 * a.shape[-1]:2]
        view[...] = a
        return view
    if kind == "negative" and nd:
        r = np.flip(a, axis).copy()
        return np.flip(r, axis)
    if kind == "fortran":
        return np.asfortranarray(a)
    if kind == "broadcast0" and nd and a.shape[axis] > 1:
        return np.broadcast_to(np.take(a, [0], axis=axis), a.shape)
    if kind == "unaligned" and a.size and a.dtype.itemsize > 1:
        buf = np.zeros(a.nbytes + a.dtype.itemsize, np.uint8)
        view = buf[1:1 + a.nbytes].view(a.dtype).reshape(a.shape)
        view[...] = a
        return view
    if kind == "nan":
        return _injected(a, rng, np.nan)
    if kind == "inf":
        return _injected(a, rng, np.inf)
    if kind == "ninf":
        return _injected(a, rng, -np.inf)
    if kind == "bigval":
        return _injected(a, rng, 3.0e38)
    if kind == "int_oob" and a.size and a.dtype.kind in "iu":
        a = a.copy()
        info = np.iinfo(a.dtype)
        # the values the dtype holds (-1 and 2**31 - 1 are no uint16, a bfloat16 weight's storage)
        bad = [v for v in (-1, int(a.max()) + 1, 2 ** 31 - 1, int(info.min), int(info.max))
               if info.min <= v <= info.max]
        a.reshape(-1)[rng.integers(a.size)] = bad[param % len(bad)]
        return a
    if kind == "readonly":
        a = a.copy()
        a.flags.writeable = False
        return a
    if kind == "scalar0d" and a.size:
        return np.asarray(a.reshape(-1)[0])
    return a


def apply(mutations, args, kwargs, rng, optional=()):
    """Mutates args (a list) and kwargs in place; returns (aliases: [(i_slot, j_slot)], scalar classes).
    ``optional``: the positions and names of parameters whose default is None (None is a valid value)."""
    aliases, classes, originals = [], {}, {}
    for kind, which, param in mutations:
        slots = array_slots(args)
        if kind in ARRAY_KINDS and slots:
            cont, key = slots[which % len(slots)]
            try:
                cont[key] = mutate_array(cont[key], kind, param, rng)
            except (ValueError, TypeError, MemoryError):  # numpy cannot make it (2**40 float64, object views)
                pass
        elif kind in ALIAS_KINDS and len(slots) > 1:
            i = which % len(slots)
            j = (i + 1 + param % (len(slots) - 1)) % len(slots)
            (ci, ki), (cj, kj) = slots[i], slots[j]
            a, b = ci[ki], cj[kj]
            if a.shape != b.shape or a.dtype != b.dtype:
                continue
            if kind == "alias":
                cj[kj] = a
            elif a.size:
                # a, b: two views of one buffer, shifted by one element (partial overlap)
                buf = np.zeros(a.size + 1, a.dtype)
                ci[ki] = buf[1:].reshape(a.shape)
                ci[ki][...] = a
                cj[kj] = buf[:-1].reshape(b.shape)
                cj[kj][...] = b
            aliases.append((slots[i], slots[j]))
        elif kind == "scalar":
            sslots = scalar_slots(args, kwargs)
            if not sslots:
                continue
            cont, key = sslots[which % len(sslots)]
            # the replacements of the argument's original value: a second mutation of one argument
            # draws from what its parameter takes, not from the first replacement's type
            reps = _replacements(originals.setdefault((id(cont), key), cont[key]))
            value, cls = reps[param % len(reps)]
            if value is None and key in optional:
                cls = "value"
            # the class of the argument's last replacement (a later one of the same argument replaces it)
            classes[(id(cont), key)] = (cls, f"argument {key!r}: {_short(cont[key])} -> {_short(value)} ({cls})")
            cont[key] = value
    return aliases, list(classes.values())


def _short(v):
    return f"array{v.shape}" if isinstance(v, np.ndarray) else repr(v)[:60]


def canonical(v, like=None):
    """The same values as plain C-contiguous arrays of the base call's dtype (separate copies)."""
    if isinstance(v, np.ndarray):
        if v.dtype.kind == "c":
            raise NoReference("complex values")
        if v.size > 1 << 24:
            raise NoReference("a huge view")
        dtype = like.dtype if isinstance(like, np.ndarray) else v.dtype
        try:
            return np.array(v, dtype=dtype, order="C", copy=True)
        except (TypeError, ValueError) as e:
            raise NoReference(str(e))
    if isinstance(v, (list, tuple)) and not hasattr(v, "_fields"):
        likes = like if isinstance(like, (list, tuple)) and len(like) == len(v) else [None] * len(v)
        return type(v)(canonical(x, lk) for x, lk in zip(v, likes))
    return v
