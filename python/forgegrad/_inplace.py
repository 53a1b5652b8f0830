"""In-place tensor methods (add_, mul_, clamp_, copy_, ``+=``, ...) with torch's rules.

Outside autograd (no tensor involved requires grad, or grad mode is off) the result is written into
the tensor's storage, so every tensor sharing it (``.data``, ``detach()``, views of numpy) sees it.
Inside autograd:

- a leaf that requires grad, or a view of one (reshape, slice, transpose of it), refuses (RuntimeError,
  torch's messages): its value is what backward differentiates with respect to;
- any other tensor gets the op's recorded result: its values are written into its storage (views of it,
  ``.data`` and ``detach()`` see them) and it is rebound to the result's graph node (the ops that used it
  before keep differentiating its old value, see autograd._rebound). A view of a graph tensor (slice,
  transpose, reshape, ...) is written through to its base as torch writes it: the base gets the node (torch's
  CopySlices) and the view is rebased on it; other views taken before the write are rebased when next used
  (forgegrad._view_rebase). An expanded view (two elements, one memory location) refuses, as torch.

Either way the write is counted in the tensor's version (``t._version``, shared with its views), and
backward refuses an array a recorded op saved if it was written since, with torch's RuntimeError:
``y = x.sigmoid(); y.mul_(2); y.sum().backward()`` raises (under no_grad too, and through a view or
``detach()``), as torch does. ``y.data`` has a counter of its own, so writes through it are not
checked (torch's escape hatch). See forgegrad._version_counter.
"""
from __future__ import annotations

import sys

import numpy as np

from . import _version_counter as _vc
from ._graph_memory import edge_root, is_edge, parents_of as _live_parents
from . import grad_mode

LEAF_MESSAGE = "a leaf Variable that requires grad is being used in an in-place operation."
VIEW_OF_LEAF_MESSAGE = "a view of a leaf Variable that requires grad is being used in an in-place operation."
PARTIAL_OVERLAP_MESSAGE = ("unsupported operation: some elements of the input tensor and the written-to tensor refer "
                           "to a single memory location. Please clone() the tensor before performing the operation.")
READ_ONLY_MESSAGE = ("{name}: the tensor's storage is a read-only array (np.frombuffer, from_numpy of a non-writeable "
                     "array, a dataset's images, a frozen model's weight), which an in-place op cannot write; "
                     "write into a clone() of it instead")


def inplace(self, compute, name: str, *others, cast: bool = False):
    """Make ``self`` hold ``compute(self, *others)`` (a Tensor of self's shape, or one that broadcasts to it); ``cast``:
    any result dtype is converted (copy_), else only one of the same kind (torch's rule)."""
    from .tensor import Tensor
    if self._is_inference:  # refused outside inference mode, before anything is written
        from ._inference_tensors import check_inplace
        if self.requires_grad and self._ctx is None and grad_mode.records_graph():
            raise RuntimeError(LEAF_MESSAGE)  # torch's autograd check comes first (an inference nn.Parameter)
        check_inplace(self)
    rec = grad_mode.recorder()
    if rec is not None and _traced_inplace(self, compute, name, others, cast, rec):
        return self
    if rec is not None:
        raise RuntimeError(f"{name} (on a tensor of shape {tuple(self.shape)}) ran inside "
                           "forgegrad.autograd.trace(): in-place ops are not recorded, so an export would leave "
                           "it out. Use the out-of-place op instead")
    if type(self._data) is np.ndarray and not self._data.flags.writeable:
        check_writeable(self, name)
    tracking = grad_mode.records_graph() and (
        self.requires_grad or any(isinstance(o, Tensor) and o.requires_grad for o in others))
    if tracking and self.requires_grad and self._ctx is None:
        raise RuntimeError(LEAF_MESSAGE)
    if tracking and self._ctx is not None and _views_a_leaf(self):
        raise RuntimeError(VIEW_OF_LEAF_MESSAGE)
    if tracking:
        _inplace_tracked(self, compute, name, others, cast)
        return self
    if self._ctx is None and getattr(self, "_view_of", None) is not None and grad_mode.records_graph():
        from ._view_rebase import view_target
        view_target(self)  # refuses a view of a leaf that has required grad since the view was made, as torch
    with grad_mode.no_grad():
        out = compute(self, *others)
    _check_result(self, out, name, cast)
    if type(self._data) is not np.ndarray:  # meta (no values) or another device: take the result's storage
        if out.dtype != self.dtype:
            with grad_mode.no_grad():
                out = out._cast(self._data.dtype)  # on the device, by the cast op
        if tuple(out.shape) != tuple(self.shape):
            with grad_mode.no_grad():
                out = out.expand(*self.shape)
        _vc.rebind(self, out._data)
    else:
        write_values(self._data, out._data)
        _vc.bump(self)
    return self


def _traced_inplace(self, compute, name, others, cast, rec) -> bool:
    """Inside trace() (an ONNX export), without autograd: the op is recorded on ``self``'s current value, its
    result written into ``self``'s storage, and a recorded clone of the result whose output is ``self`` makes
    the later ops that read ``self`` read the result (the exporter names tensors by identity). Only for a tensor
    that a recorded op made and that owns its storage, which nothing else references (no view of it, no view of
    another array): returns False to refuse anything else (a graph input, a weight, a view)."""
    arr = self._data
    if grad_mode.records_graph() or type(arr) is not np.ndarray or not arr.flags.writeable:
        return False
    # the array is referenced only by self (and here): no view or detach() of it would keep naming the old value
    if sys.getrefcount(arr) > 3:
        return False
    # a numpy view (instance/group norm, Conv1d, pixel shuffle reshape a temporary) only of an array nothing else
    # references (arr.base and the local name): no tensor can read the storage but self
    base = arr.base
    if base is not None and (type(base) is not np.ndarray or sys.getrefcount(base) > 3):
        return False
    if not any(o is self for r in reversed(rec.records) for o in r[3]):  # a graph input, weight or constant
        return False
    out = compute(self, *others)
    _check_result(self, out, name, cast)
    if out.dtype != self.dtype:
        out = out.to(self.dtype)
    if tuple(out.shape) != tuple(self.shape):
        out = out.expand(*self.shape)
    write_values(arr, out._data)
    _vc.bump(self)
    rec.record(_clone_function(), (out,), {}, (self,))
    return True


def _clone_function():
    from .ops.shape import CloneFunction
    return CloneFunction


def check_writeable(t, name: str) -> None:
    """Refuse an in-place write into ``t`` whose storage is read-only (RuntimeError naming the way out; numpy's
    own error said less). A read-only view of writeable storage (an expanded view, or a slice of one) is
    written through its storage (see write_values)."""
    r = _vc.root(t._data)
    if not (isinstance(r, np.ndarray) and r.flags.writeable):
        raise RuntimeError(READ_ONLY_MESSAGE.format(name=name))


def write_values(arr, values) -> None:
    """``arr``'s elements (a tensor's array) take ``values`` (broadcast to its shape) in its storage. numpy
    makes a slice of an expanded view read-only although its elements are distinct: those are written through
    the storage's own array, and an expanded view whose elements repeat one memory location refuses, as torch."""
    if arr.flags.writeable:
        arr[...] = values
        return
    from ._view_rebase import check_no_overlap, positions
    r = _vc.root(arr)
    idx = positions(r, arr)
    if idx is None:
        raise RuntimeError(READ_ONLY_MESSAGE.format(name="in-place write"))
    check_no_overlap(idx, arr)
    r[np.unravel_index(idx, r.shape)] = np.broadcast_to(values, arr.shape)


def _inplace_tracked(self, compute, name, others, cast) -> None:
    """The in-place op recorded by autograd (see the module's docstring)."""
    from ._view_rebase import OverwrittenFunction, check_no_overlap, stand_in, view_target, write_through_view
    from .autograd import _note_rebind
    from .tensor import Tensor
    for o in others:
        if isinstance(o, Tensor) and o is not self and _partial_overlap(self._data, o._data):
            # torch refuses it too: the op's node would read an input the write changes (wrong gradients)
            raise RuntimeError(PARTIAL_OVERLAP_MESSAGE)
    # (base, self's elements in it)
    target = view_target(self, tracked=True) if type(self._data) is np.ndarray else None
    if target is not None:
        check_no_overlap(target[1], self._data)  # an expanded view: torch refuses
        # the view's old value is read from a stand-in for the base as it is now: the base's new node must not
        # reach the base itself through the view's node (a reference cycle keeping the graph alive until gc)
        base_old, old = stand_in(target[0], target[1], self._data.copy())
    else:
        in_storage = type(self._data) is np.ndarray and self._data.flags.writeable
        # the op's input is a stand-in holding self's current node: self itself becomes the output, and a graph
        # whose node lists self as its own input would loop. Its array is a copy when the result is written into
        # self's storage (what the op saves of it must keep the old values)
        old = Tensor._wrap_exact(self._data.copy() if in_storage else self._data)
        old._ctx, old._out_index, old.requires_grad = self._ctx, self._out_index, self.requires_grad
    # the write is counted first: what saved the old value before now is outdated (torch raises for it at
    # backward), while this op's own use of the old value, saved below, is not
    _vc.bump(self)
    try:
        out = compute(old, *[old if o is self else o for o in others])
        _check_result(self, out, name, cast)
        if out.dtype != self.dtype:
            out = out.to(self.dtype)
        if tuple(out.shape) != tuple(self.shape):
            out = out.expand(*self.shape)
        if old.requires_grad and not out.requires_grad:  # zero_(), fill_(3): still in the graph, as torch's
            out = OverwrittenFunction.apply(old, out._data)
    except BaseException:
        _vc.unbump(self)  # a refused op wrote nothing
        raise
    if target is not None:  # recorded on the base (CopySlices), which writes the storage; self is rebased
        write_through_view(self, target[0], target[1], base_old, out)
        _vc.share(out._data, self._data)
        return
    if in_storage:  # views and tensors sharing the storage see the new values; the result's array (which
        self._data[...] = out._data  # the op may have saved) is counted with the storage from now on
        _vc.share(out._data, self._data)
    else:  # another device or a read-only array: self takes the result's storage
        _vc.carry(self._data, out._data)
        self._data = out._data
    self._ctx, self._out_index = out._ctx, out._out_index
    self.requires_grad = out.requires_grad
    _note_rebind(self, old)  # the ops that used self before keep using it as it was (old)
    if self._ctx is not None:  # kept alive with the op's node, which may not take old as input (copy_)
        self._ctx.rebound_from = old


def _partial_overlap(a, b) -> bool:
    """Whether arrays ``a`` and ``b`` share some memory without being the same elements (``h[1:]`` and ``h[:-1]``;
    ``h`` and ``h`` are torch's full overlap, allowed; interleaved ``h[::2]``, ``h[1::2]`` share none)."""
    if type(a) is not np.ndarray or type(b) is not np.ndarray or not np.may_share_memory(a, b):
        return False
    if (a.__array_interface__["data"][0] == b.__array_interface__["data"][0] and a.shape == b.shape
            and a.strides == b.strides):
        return False
    return bool(np.shares_memory(a, b))


def _views_a_leaf(t) -> bool:
    """Whether ``t`` is a view (reshape, slice, transpose, ...: its storage is part of the same array) of a
    leaf that requires grad, found up the ops that made it from that array. torch refuses an in-place op
    on it: the leaf's values would change under autograd."""
    r = _vc.root(t._data)
    todo = [t._ctx]
    while todo:
        node = todo.pop()
        # (a view op's input that its node holds weakly is alive: the view holds its base, forgegrad._graph_memory)
        for p in (_live_parents(node) if node.weak_inputs else node.parents):
            if p is None or (edge_root(p) if is_edge(p) else _vc.root(p._data)) is not r:
                continue
            if p._ctx is None:
                if p.requires_grad:
                    return True
            else:
                todo.append(p._ctx)
    return False


def _check_result(self, out, name: str, cast: bool) -> None:
    # torch: the result must fit the tensor (no broadcasting it up, no float into an integer tensor)
    try:
        shape = np.broadcast_shapes(tuple(out.shape), tuple(self.shape))
    except ValueError:
        shape = None
    if shape != tuple(self.shape):
        raise RuntimeError(f"{name}: output with shape {tuple(self.shape)} doesn't match the broadcast shape "
                           f"{tuple(out.shape) if shape is None else shape}")
    if not cast and not np.can_cast(out._data.dtype, self._data.dtype, casting="same_kind"):
        raise RuntimeError(f"{name}: result type {out.dtype} can't be cast to the desired output type "
                           f"{self.dtype}")
