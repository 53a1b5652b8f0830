"""Version counters (torch's ``t._version``): how many in-place writes a tensor's storage has had.

A recorded op keeps arrays for its backward (``ctx.save_for_backward``); changing one of them in place
before backward runs would make the gradient wrong without any error. So, as in torch, every in-place
write a user makes through a tensor (``add_``, ``mul_``, ``copy_``, ``t[i] = v``, ``nn.init``, an
optimizer step, ``load_state_dict``) adds one to the tensor's version, and backward raises torch's
RuntimeError for an array an op saved that has been written since the op saved it.

The count belongs to the storage, not to the Tensor object: forgegrad's views (reshape, slicing,
transpose, expand, ``detach()``) are numpy views of one base array, so the count is kept per base array
(the root of the ``.base`` chain) and a write through any view counts for the base and all its views,
as torch's shared counter does. ``t.data`` is the exception, as in torch: it has a counter of its own,
so writing through it is not seen by autograd (the escape hatch for deliberate changes).

Writes that kernels make into their own buffers (``out=`` on temporaries, an op's scratch space) are no
user's in-place op and count nothing. Cost: every counted write also advances one global ``clock`` and
stamps its array with it; ``save_for_backward`` notes only the clock, and backward compares it with the
clock now, one int compare per node. Only when something was written since the save (a rare event in a
training step: the optimizer writes after backward) are the saved arrays' stamps looked up. An
optimizer's step stamps once for all its parameters (a :class:`WriteCounter`), so it costs about the
same for 10 parameters as for 1000. Entries are kept only for arrays that have been written, keyed by
``id`` and dropped (weakref callback) when the array is freed.
"""
from __future__ import annotations

import operator
import weakref
from typing import Dict, Optional

import numpy as np

_NDARRAY = np.ndarray
_HISTORY = 16  # write stamps kept at least per array, to name the version a saved array was at in the error

# id(root array) -> [writes not stamped, [clock stamps of its own writes since], whether stamps were
# dropped, the WriteCounter that also writes it (or None), that counter's count of calls when it began].
# Its version is the first, plus its stamps, plus the counter's calls since it began (an array not listed
# is at version 0). Stamps are dropped, oldest first, past 4 * _HISTORY; a carried count (see carry) is
# unstamped. _refs holds the weak reference whose callback removes the entry when the array is freed (so
# a later array that gets the same id starts afresh).
entries: Dict[int, list] = {}
_refs: Dict[int, "weakref.ref"] = {}
clock = 0  # counted writes so far, over all arrays
# writes through ``t.data`` tensors so far, over all arrays: not any array's version (autograd must not see them),
# but a cache of values computed from weights (forgegrad.compile's frozen copy) must know that something changed
data_writes = 0

TYPE_NAMES = {np.dtype(np.float32): "FloatTensor", np.dtype(np.float64): "DoubleTensor",
              np.dtype(np.int64): "LongTensor", np.dtype(np.int32): "IntTensor", np.dtype(np.int16): "ShortTensor",
              np.dtype(np.int8): "CharTensor", np.dtype(np.uint8): "ByteTensor", np.dtype(np.bool_): "BoolTensor",
              np.dtype(np.complex64): "ComplexFloatTensor", np.dtype(np.complex128): "ComplexDoubleTensor"}


def root(arr):
    """The array that owns ``arr``'s memory: the end of its chain of numpy ``.base`` arrays (a device or
    meta array is its own root)."""
    if isinstance(arr, _NDARRAY):
        base = arr.base
        while isinstance(base, _NDARRAY):
            arr, base = base, base.base
    return arr


def _version(e) -> int:
    w = e[3]
    return e[0] + len(e[1]) + (0 if w is None else w.total() - e[4])


def version_of(arr) -> int:
    """The in-place writes that ``arr``'s storage has had."""
    e = entries.get(id(root(arr)))
    return 0 if e is None else _version(e)


def _forget(key: int) -> None:
    entries.pop(key, None)
    _refs.pop(key, None)


def _entry(r) -> Optional[list]:
    """Root array ``r``'s entry, made (with the weak reference that forgets it) if new; None for an array
    that cannot be weakly referenced (its count is not kept)."""
    key = id(r)
    e = entries.get(key)
    if e is None:
        try:
            _refs[key] = weakref.ref(r, lambda _, key=key: _forget(key))
        except TypeError:
            return None
        e = entries[key] = [0, [], False, None, 0]
    return e


def _trim(stamps: list) -> int:
    """Drop the oldest of ``stamps`` past 4 * _HISTORY (in place); how many were dropped."""
    n = len(stamps) - _HISTORY
    if len(stamps) <= 4 * _HISTORY:
        return 0
    del stamps[:n]
    return n


def _write(r) -> None:
    """Count one in-place write into root array ``r``."""
    global clock
    e = _entry(r)
    if e is not None:
        clock += 1
        e[1].append(clock)
        dropped = _trim(e[1])
        if dropped:
            e[0] += dropped
            e[2] = True


def tick() -> int:
    """Advance the clock without a write (an event that backward orders against nodes' clocks)."""
    global clock
    clock += 1
    return clock


def bump(t) -> None:
    """Count one in-place write through tensor ``t`` (an inference tensor's, outside inference mode, is refused:
    forgegrad._inference_tensors)."""
    global data_writes
    if t._is_inference:
        from ._inference_tensors import check_inplace
        check_inplace(t)
    own = getattr(t, "_own_version", None)
    if own is not None:  # t.data: a counter of its own (torch's), unseen by saved tensors
        own[0] += 1
        data_writes += 1
    else:
        _write(root(t._data))


def unbump(t) -> None:
    """Take back the write :func:`bump` just counted for ``t`` (the in-place op was then refused)."""
    own = getattr(t, "_own_version", None)
    if own is not None:
        own[0] -= 1
        return
    e = entries.get(id(root(t._data)))
    if e is not None and e[1]:
        e[1].pop()


def bump_arrays(arrays) -> None:
    """Count one in-place write into each of ``arrays`` (a load into parameters, an L-BFGS update)."""
    for a in arrays:
        _write(root(a))


class WriteCounter:
    """Counts one in-place write into each of a list of arrays per call, for a caller that writes the same
    arrays at every step (an optimizer's parameters). A call stamps the counter itself, once: the arrays'
    entries refer to it (their version adds its calls since they joined), and are looked up again only
    when the arrays change (identity)."""

    __slots__ = ("arrays", "entries", "stamps", "dropped")

    def __init__(self):
        self.arrays: list = []
        self.entries: list = []
        self.stamps: list = []  # the clock of each call (the oldest dropped past 4 * _HISTORY)
        self.dropped = 0

    def __reduce__(self):
        # a copy (copy.deepcopy, pickle of an optimizer) starts afresh: its entries would be copies that the
        # module's table does not hold, and its arrays the copied parameters', so it would count nothing
        return (WriteCounter, ())

    def total(self) -> int:
        """Calls so far."""
        return self.dropped + len(self.stamps)

    def __call__(self, arrays: list) -> None:
        global clock
        if len(arrays) != len(self.arrays) or not all(map(operator.is_, arrays, self.arrays)):
            self._join(arrays)
        clock += 1
        self.stamps.append(clock)
        if len(self.stamps) > 4 * _HISTORY:
            self.dropped += _trim(self.stamps)

    def _join(self, arrays: list) -> None:
        for e in self.entries:
            if e[3] is self:
                _leave(e)
        self.arrays = arrays  # holding them keeps their entries alive while they are in use
        self.entries = []
        for a in arrays:
            e = _entry(root(a))
            if e is None or e[3] is self:  # (an array listed twice is written once a call)
                continue
            if e[3] is not None:  # another counter's (two optimizers over one parameter): it looks again
                e[3].arrays = []
                _leave(e)
            e[3], e[4] = self, self.total()
            self.entries.append(e)


def _leave(e) -> None:
    """Entry ``e`` stops following its WriteCounter: the counter's calls since it joined become its own
    stamps (those the counter dropped, unstamped writes)."""
    w = e[3]
    start = e[4] - w.dropped
    if start < 0:
        e[0] -= start
        e[2] = True
    e[1].extend(w.stamps[max(start, 0):])
    e[1].sort()
    dropped = _trim(e[1])
    if dropped:
        e[0] += dropped
        e[2] = True
    e[3] = None


def carry(old, new) -> None:
    """A tensor's storage was replaced by ``new`` to stand for an in-place write (autograd's rebinding,
    another device): the new storage continues the old one's count, as the tensor's own does in torch.
    No write is stamped on it: what saved the new array (the op that made it) saw its final value."""
    r_old, r_new = root(old), root(new)
    n = version_of(r_old)
    if r_new is not r_old and n > version_of(r_new):
        e = _entry(r_new)
        if e is not None:
            e[0] += n - _version(e)


def share(alias, owner) -> None:
    """``alias``'s storage (an in-place op's result, whose values were copied into ``owner``'s storage and
    which the op's node may have saved, ``y.sigmoid_()``) is counted with ``owner``'s from now on: a later
    write into the owner makes backward refuse what was saved of the alias, as if it were the storage."""
    r_alias, r_owner = root(alias), root(owner)
    if r_alias is r_owner or not isinstance(r_alias, _NDARRAY) or id(r_alias) in entries:
        return  # (an array already counted is some tensor's storage, never a fresh result)
    e = _entry(r_owner)
    if e is None:
        return
    key = id(r_alias)
    try:
        _refs[key] = weakref.ref(r_alias, lambda _, key=key: _forget(key))
    except TypeError:
        return
    entries[key] = e


def rebind(t, new) -> None:
    """Give tensor ``t`` the storage ``new`` in place of an in-place write (meta, another device): one
    write counted, and the new storage continues the count."""
    bump(t)
    carry(t._data, new)
    t._data = new


def _after(stamps: list, unknown: bool, saved_at: int):
    """(how many of ``stamps`` are later than ``saved_at``, whether that is all the writes since it:
    false when older stamps were dropped and every one kept is later)."""
    later = sum(1 for c in stamps if c > saved_at)
    return later, not unknown or later < len(stamps)


def check(node, arrays, saved_at: int) -> None:
    """Raise torch's RuntimeError if an array that ``node`` saved (at clock ``saved_at``) has been written
    in place since."""
    for a in arrays:
        e = entries.get(id(root(a)))
        if e is None:
            continue
        w = e[3]
        own_later, own_exact = _after(e[1], e[2], saved_at)
        if w is None:
            w_later, w_exact = 0, True
        else:
            start = e[4] - w.dropped
            w_later, w_exact = _after(w.stamps[max(start, 0):], start < 0, saved_at)
        if not own_later and not w_later:
            continue
        now = _version(e)
        then = now - own_later - w_later
        then = str(then) if own_exact and w_exact else f"{then} or earlier"
        shape = ", ".join(str(s) for s in getattr(a, "shape", ()))
        kind = TYPE_NAMES.get(getattr(a, "dtype", None), "Tensor")
        raise RuntimeError(
            "one of the variables needed for gradient computation has been modified by an inplace operation: "
            f"[torch.{kind} [{shape}]], saved by {type(node).__name__} for its backward, is at version {now}; "
            f"expected version {then} instead. Hint: it was changed in place (an in-place method such as add_ "
            "or copy_, t[...] = v, an optimizer step) after the forward pass saved it; change a clone() of it "
            "instead, or run the forward pass again after the change.")
