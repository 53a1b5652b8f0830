"""``nn.utils.freeze(module)``: an inference copy of a model with its layers' weights packed once
(``inplace=True``: the model itself made that, without a copy).

Every call of a float32 Linear packs its weight into the GEMM's panel layout before multiplying
(a pass over the whole weight: ~5-8% of a batch-1 GPT forward), and every 3x3 Conv2d that runs
Winograd transforms its kernels (~14 us for LeNet's 64 x 32: a sixth of its batch-1 conv). A frozen
copy does both once, as onnxruntime does when it creates a session. The copy is a snapshot, like an
export: its parameters are read-only arrays that do not require grad, so nothing can change a weight
behind its packed form; a weight replaced by a new array is simply read unpacked.
"""
from __future__ import annotations

import copy
from typing import Optional

import numpy as np

from ... import _C
from ... import _version_counter as _vc
from ..._memory import ALIGN, empty_aligned
from ..container import Sequential
from ..conv import Conv2d
from ..linear import Dense, Linear
from ..module import Module

__all__ = ["freeze", "frozen_view", "is_frozen", "packed_nbytes", "frozen_arrays", "FrozenCache"]


def freeze(module: Module, inplace: bool = False) -> Module:
    """A deep copy of ``module`` for inference: eval mode, parameters read-only (``requires_grad``
    False, numpy arrays not writeable), the weight of every float32 CPU ``Linear`` / ``Dense`` packed
    for the GEMM and every 3x3 ``Conv2d``'s Winograd transform made (used where the graph-free
    Sequential runs the conv). Outputs equal the original's bit for bit; the original is left as it was.

    ``inplace=True``: ``module`` itself becomes that inference model and is returned (no copy: memory is
    the weights plus the packed copies, not twice the weights plus them). It is then read-only as the copy
    would be: its parameters no longer require grad and writing into a weight raises ValueError
    ("read-only"); to train again, load the weights into a new model. A weight replaced by a new Parameter is
    read as it is, and freezing again packs only the weights that changed. The servers freeze the Hugging
    Face models they load this way (``forgegrad serve --no-freeze`` keeps them as loaded).

    Each Sequential of the copy runs its graph-free forward (no_grad) as one C++ call where its layers
    allow it (Conv2d [-> activation] [-> 2x2 max pool], Linear [-> activation], Flatten), with the
    layers' settings (stride, padding, activation) read at its first call: change a setting on the
    copy and it may not be seen; the weights (their arrays, or new Parameters) and forward pre-hooks are
    followed at every call.

    Packing helps layers called on several rows at once (a prefill, a served batch); single-row
    calls read the weight in place either way. The packed copies take as much memory as the weights.
    """
    if not isinstance(module, Module):
        raise TypeError(f"freeze: module must be a forgegrad.nn.Module, got {type(module).__name__}")
    if not isinstance(inplace, bool):
        raise TypeError(f"freeze: inplace must be True or False, got {inplace!r}")
    frozen = module if inplace else _realigned(copy.deepcopy(module))
    frozen.eval()
    for p in frozen.parameters():
        p.requires_grad = False
        if type(p._data) is np.ndarray:
            _lock(p._data)
    return _pack(frozen)


def _lock(a: np.ndarray) -> None:
    """``a`` read-only, and the 64-byte aligned allocation behind it (a layer's or _realigned's, holding ``a`` alone)
    too: in-place writes go through a view's storage when only the view is read-only (forgegrad._inplace), so a
    frozen weight on such an allocation had stayed writeable."""
    a.flags.writeable = False
    r = _vc.root(a)
    if r is not a and r.dtype == np.uint8 and r.ndim == 1 and r.nbytes <= max(a.nbytes, ALIGN) + ALIGN:
        r.flags.writeable = False


def _realigned(copied: Module) -> Module:
    """``copied`` (a deep copy) with its parameter and buffer arrays on 64-byte boundaries again, as the layers
    allocate them (forgegrad._memory): deepcopy's numpy copies start 16 bytes into a line, and a batch-1 Linear
    that streams a misaligned weight split its vector loads across two lines (an MLP 784-256-128-10 frozen
    copy ran 10-15 % slower than the model it was made from)."""
    # id(array) -> (array, its aligned copy): tensors that shared an array (tied weights) still share one; the old
    # array is held so that its id is not reused by a new one during the walk
    moved = {}
    for m in copied.modules():
        for store in (m._parameters, m._buffers):
            for t in store.values():
                a = None if t is None else t._data
                if id(a) in moved:
                    t._data = moved[id(a)][1]
                elif type(a) is np.ndarray and a.base is None and a.size and a.ctypes.data % ALIGN \
                        and a.flags.c_contiguous:  # (a view shares its memory with another array: left as it is)
                    aligned = empty_aligned(a.shape, a.dtype)
                    aligned[...] = a
                    moved[id(a)] = (a, aligned)
                    t._data = aligned
    return copied


def frozen_view(module: Module) -> Module:
    """An inference copy of ``module`` as ``freeze`` makes it (eval, packed Linear weights, Winograd transforms,
    one-call Sequentials), whose parameters and buffers are ``module``'s own arrays: not copied and left
    writeable (only the packed copies take memory). Its packed copies are snapshots, so it is valid only while
    those arrays are unchanged; ``forgegrad.compile`` checks that (identity and version counters) before every
    call and makes a new one otherwise. Values cached on read-only weights (``frozen_arrays``) do not apply to it."""
    if not isinstance(module, Module):
        raise TypeError(f"frozen_view: module must be a forgegrad.nn.Module, got {type(module).__name__}")
    shared = [t._data for m in module.modules() for store in (m._parameters, m._buffers)
              for t in store.values() if t is not None]
    memo = {id(a): a for a in shared}  # deepcopy maps each array to itself: the copy reads the model's arrays
    memo[id(memo)] = shared  # (deepcopy's keep-alive slot: the arrays outlive the copy's making)
    view = copy.deepcopy(module, memo)
    view.eval()
    for p in view.parameters():
        p.requires_grad = False
        p.grad = None  # (the copy's gradients would only hold memory)
    return _pack(view)


def _pack(frozen: Module) -> Module:
    """Packs ``frozen``'s float32 Linear weights and 3x3 conv Winograd transforms, and lets its Sequentials run
    as one C++ call."""
    for m in frozen.modules():
        if isinstance(m, Sequential):
            # its graph-free forward may run as one C++ call (a plan built at its first call)
            m.__dict__.pop("_inference_plan", None)
            object.__setattr__(m, "_native_steps", True)
        w = m._parameters.get("weight") if isinstance(m, (Linear, Dense)) else None
        if w is not None and type(w._data) is np.ndarray and w._data.dtype == np.float32 and w._data.ndim == 2 \
                and not _packed_from(m, w._data):
            object.__setattr__(m, "_packed_weight", _C.gemm.PackedWeight(w._data))
        w = m._parameters.get("weight") if type(m) is Conv2d else None
        if w is not None and type(w._data) is np.ndarray and w._data.dtype == np.float32 and w._data.ndim == 4 \
                and not _packed_from(m, w._data, m.groups):
            packed = _C.conv.PackedConvWeight(w._data, m.groups)
            if packed.nbytes:  # empty for kernels that never run Winograd
                object.__setattr__(m, "_packed_weight", packed)
    return frozen


def _packed_from(m: Module, array: np.ndarray, groups: Optional[int] = None) -> bool:
    """Whether ``m`` already holds a packed copy of ``array`` (a model frozen again: nothing to redo)."""
    packed = m.__dict__.get("_packed_weight")
    return packed is not None and packed.source is array and (groups is None or packed.groups == groups)


def is_frozen(module: Module) -> bool:
    """Whether ``module`` (or a submodule) holds packed weights made by ``freeze``."""
    return any(m.__dict__.get("_packed_weight") is not None for m in module.modules())


def packed_nbytes(module: Module) -> int:
    """The bytes of the packed copies ``freeze`` made for ``module``'s layers: what freezing adds to its weights."""
    return sum(m.__dict__["_packed_weight"].nbytes for m in module.modules()
               if m.__dict__.get("_packed_weight") is not None)


def frozen_arrays(*params) -> Optional[tuple]:
    """The arrays behind ``params`` (None entries skipped) when every one is read-only and needs no gradient, as
    ``freeze`` leaves them, else None. Only such arrays can key a value computed from weights alone (a model may
    keep it across calls, as onnxruntime folds constants): nothing can change them in place, and a replaced weight
    brings a new array."""
    arrays = []
    for p in params:
        if p is None:
            continue
        a = p._data
        if p.requires_grad or type(a) is not np.ndarray or a.flags.writeable:
            return None
        arrays.append(a)
    return tuple(arrays)


class FrozenCache:
    """Values computed from ``frozen_arrays`` kept per key, each with the arrays it was computed from: a lookup
    matches only while the caller's arrays are those very objects (an entry keyed by ``id`` alone could be matched
    by a new array that reuses a freed one's id). A deep copy or a pickle starts empty: the copy's weights are other
    arrays, and the entries would only hold memory. At most ``size`` entries (cleared when full)."""

    def __init__(self, size: int = 16):
        self.size = size
        self._entries: dict = {}

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key, arrays: tuple, compute):
        """The value kept for ``key`` and ``arrays``, else ``compute()`` kept under them."""
        full = (key, tuple(map(id, arrays)))
        entry = self._entries.get(full)
        if entry is None or any(a is not b for a, b in zip(entry[0], arrays)):
            if len(self._entries) >= self.size:
                self._entries.clear()
            entry = self._entries[full] = (arrays, compute())
        return entry[1]

    def __deepcopy__(self, memo):
        return FrozenCache(self.size)

    def __reduce__(self):
        return FrozenCache, (self.size,)
