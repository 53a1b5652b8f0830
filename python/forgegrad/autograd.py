"""The autograd engine: Function (one forward and one backward rule per op), grad mode, backward.

Every differentiable op is a ``Function`` subclass whose ``forward`` and ``backward`` work on plain
numpy arrays (the kernels' world) while ``apply`` handles Tensors: it unwraps inputs, runs forward,
wraps outputs and, when any input requires a gradient, links the outputs to the graph. ``apply`` is also where an op is
dispatched: by the device of its tensor arguments (see forgegrad.devices), and, when no graph is
recorded, to the op's inference kernel (its record's ``inference``). Non-tensor
arguments (axes, strides, flags) pass through unchanged, positionally or by keyword; they are also
what the ONNX exporter reads as the op's attributes (see ``trace``).

The smallest complete example is ``ExpFunction`` in ``ops/elementwise.py``: its forward computes
``y = np.exp(x)`` and keeps y with ``ctx.save_for_backward(y)``; its backward reads it back from
``ctx.saved_tensors`` and returns ``grad * y``.

A backward pass with ``create_graph=True`` (double backward) runs, instead of the array rules, each op's
differentiable rule, written with Tensor ops (ops/_double_backward.py; the engine is forgegrad._create_graph);
``apply`` keeps each node's call (``ctx.call``) for those rules. ``forgegrad.autograd.functional`` (vjp, jvp,
jacobian, hessian, hvp, vhp) is built on them.
"""
from __future__ import annotations

import sys
import weakref
from typing import Any, Dict, List, Sequence

import numpy as np

from . import _version_counter as _vc
from . import devices as _devices
from . import dtypes as _dtypes
from .grad_mode import (_state, enable_grad, graph_free, inference_mode, is_grad_enabled,  # noqa: F401
                        is_inference_mode_enabled, no_grad, set_grad_enabled, trace, watch_inference_seen)
from ._graph_memory import drop_inputs as _drop_inputs, parents_of as _live_parents, release_parents as _release_parents
from ._tensor_hooks import _hold, _node_tensor_hooks, _retained_by_hooks, _run_grad_hooks
from ._backward_leaves import _check_device_grad, _count_down, _fire_post_hooks, _hooked_leaf_uses  # noqa: F401
from .tensor import Tensor, _HookHandle
from ._inference_tensors import outputs_made as _inference_outputs
from ._quiet import QUIET as _QUIET, loud as _loud, quiet as _quiet
from ._pass_observers import (_Pass, _PassState, _add_pass_observer, _notify_pass,  # noqa: F401 (re-exported)
                              _pass_observers, _pass_state, queue_callback)
from ._op_dispatch import (floating_out as _floating_out, ints_as_floats as _ints_as_floats,
                           COMPLEX_SCALARS as _COMPLEX_SCALARS, dispatch as _dispatch)

_NDARRAY = np.ndarray
_inference_seen = False  # set by grad_mode.watch_inference_seen: an inference_mode block has run
watch_inference_seen(globals())


_F32 = np.dtype(np.float32)

__all__ = ["Function", "no_grad", "enable_grad", "set_grad_enabled", "is_grad_enabled", "inference_mode", "functional",
           "is_inference_mode_enabled", "trace", "queue_callback", "grad", "backward"]

# A tensor that a recorded in-place op rebound to its result (forgegrad._inplace) is still an input of the
# ops that used it before: they must see it as it was then. id(tensor) -> [(clock of the rebinding, weak
# reference to the stand-in holding the tensor's node, storage and requires_grad before it)]; a node made
# before a rebinding (its made_at clock is older) reads the stand-in in its place. The stand-ins are held
# by the nodes of the in-place ops that took them as input (weakly here); an entry goes with its tensor.
_rebound: Dict[int, list] = {}
_rebound_refs: Dict[int, Any] = {}  # id(tensor) -> the weak reference whose callback drops its entry
# [the clock of the latest rebinding]: a view whose node is older may be stale (forgegrad._view_rebase)
_rebind_clock = [0]
# set by forgegrad.func._batched while a batched vmap runs (its batching rules take the ops on batched values)
_batch_hook = None


def _forget_rebound(key: int) -> None:
    _rebound.pop(key, None)
    _rebound_refs.pop(key, None)


def _note_rebind(t, old) -> None:
    """Tensor ``t`` was rebound by an in-place op; ``old`` stands for it as it was before."""
    key = id(t)
    hist = _rebound.get(key)
    if hist is None:
        hist = _rebound[key] = []
        _rebound_refs[key] = weakref.ref(t, lambda _, key=key: _forget_rebound(key))
    else:
        hist[:] = [h for h in hist if h[1]() is not None]
    at = _vc.tick()
    hist.append((at, weakref.ref(old)))
    _rebind_clock[0] = at


def _parents_of(node) -> tuple:
    """``node``'s inputs as they were when it was recorded (see _rebound): a dropped input that is still alive
    in its Edge's place (forgegrad._graph_memory)."""
    parents = _live_parents(node) if node.weak_inputs else node.parents
    if not _rebound:
        return parents
    out = []
    for p in parents:
        hist = None if p is None else _rebound.get(id(p))
        if hist is not None:
            for at, ref in hist:
                if node.made_at < at:
                    old = ref()
                    p = p if old is None else old
                    break
        out.append(p)
    return tuple(out)


# ---- Function --------------------------------------------------------------------------------
class Function:
    """Base class of differentiable ops. Subclasses define static ``forward`` and ``backward``.

    ``forward(ctx, *args, **kwargs)`` receives numpy arrays in place of Tensors and returns an
    array or a tuple of arrays. ``backward(ctx, *grad_outputs)`` receives one gradient array per
    output (zeros for outputs that did not reach the loss, None where ``materialize_grads`` is False) and
    returns one gradient (array or None) per positional argument of forward, each with that argument's shape.
    """

    # Outputs that are not differentiable (e.g. argmax indices) are listed by position.
    non_differentiable_outputs: Sequence[int] = ()
    # True: the output may be a view of input 0 (it shares its storage); an in-place write into either is
    # seen by the other, and the view is rebased after one (forgegrad._view_rebase)
    is_view = False
    # True: outputs keep the dtype forward gives them (cast); else a float64 output of float32 inputs
    # (numpy promoting int + float) is stored as float32, as torch's promotion gives
    exact_dtype = False
    # True: an unregistered Function whose numpy code computes in its inputs' dtype runs float64 as is
    handles_float64 = False
    # True: a Function of complex tensors (ops/_complex.py), reached from the op's own Function by Function.apply
    complex_path = False
    # ((position, weak reference), ...): inputs the node holds weakly, an Edge in ctx.parents in their place
    # (forgegrad._graph_memory); set on the instance
    weak_inputs = ()
    # False (on the class, or set on a node in forward): backward gets None, not zeros, for an output that did not
    # reach the loss (torch's ctx.set_materialize_grads(False); a module's full backward hook shows None there)
    materialize_grads = True

    # saved_at: the in-place write clock when save_for_backward ran (None: nothing saved; apply sets it)
    # made_at: the clock when the node was recorded (see _rebound)
    # rebound_from: the stand-in for the tensor an in-place op or a rebase rebound to this node, kept alive with
    # it (_rebound holds it weakly) and not dropped by release(): a node still to run in the same backward
    # pass may read it in that tensor's place
    __slots__ = ("parents", "needs_input_grad", "saved_tensors", "saved_at", "made_at", "out_meta", "released",
                 "rebound_from", "__dict__")

    def save_for_backward(self, *arrays) -> None:
        """Keep ``arrays`` for backward (``ctx.saved_tensors``). The in-place write clock is noted with them:
        backward raises if one of them has been written in place since (see forgegrad._version_counter)."""
        self.saved_tensors = arrays
        self.saved_at = _vc.clock

    @staticmethod
    def forward(ctx, *args, **kwargs):  # pragma: no cover - abstract
        raise NotImplementedError

    @staticmethod
    def backward(ctx, *grad_outputs):  # pragma: no cover - abstract
        raise NotImplementedError

    # The op's record in forgegrad.ops.registry and its no-graph CPU kernel (set by register_op).
    op = None
    inference = None
    # True: forward/backward take arrays of any device (ToDevice), so no per-device Function is looked up
    any_device = False

    def __init_subclass__(cls, **kwargs):
        # A subclass computes something else unless registered itself: it inherits no record.
        super().__init_subclass__(**kwargs)
        cls.op = None
        cls.inference = None

    @classmethod
    def apply(cls, *args, **kwargs):
        # The one dispatch path of every op, and its hot path: kept free of imports and generic
        # helpers (it runs once per op in every training step, and at batch 1 its cost is comparable
        # to the kernels'). CPU arrays are numpy ndarrays; any other storage goes to _apply_on_device.
        if _batch_hook is not None:  # a batched vmap (an op on its values goes to a rule) or autocast region runs
            out = _batch_hook(cls, args, kwargs)
            if out is not NotImplemented:
                return out
        if _rebound:  # some tensor was rebound by an in-place op: a view input may need its new node
            _rebase_inputs(args)
        raw = []
        needs = []
        any_needs = False
        plain = True  # CPU float32 tensors and real numbers only: no device, dtype or complex rule applies
        tensors = False
        for a in args:
            if isinstance(a, Tensor):
                d = a._data
                if type(d) is not _NDARRAY or d.dtype is not _F32:
                    plain = False
                tensors = True
                raw.append(d)
                r = a.requires_grad
                needs.append(r)
                any_needs = any_needs or r
            else:
                raw.append(a)
                needs.append(False)
                if isinstance(a, _COMPLEX_SCALARS):  # float32 tensor * 1j: a complex op
                    plain = False
        state = _state.__dict__
        if plain and tensors:  # the common case: the op's own Function, its float32 results as they come
            ints_only = False
            wrap = Tensor._wrap_exact if cls.exact_dtype else Tensor._wrap
            inference = cls.inference
        else:
            got = _dispatch(cls, args, kwargs, raw, state)
            if type(got) is not tuple:
                return got.value  # run elsewhere (meta, complex, torch's dtypes)
            cls, raw, wrap, ints_only, inference = got
        record_graph = any_needs and state.get("grad_enabled", True)
        recorder = state.get("recorder")
        if inference is not None and not record_graph and recorder is None:
            # No graph and no trace: the forward alone, through the op's inference kernel.
            token = _quiet(_QUIET)  # numpy's RuntimeWarnings at edge values stay quiet, as torch's (see _quiet)
            try:
                out = inference(*raw, **kwargs)
            finally:
                _loud(token)
            if ints_only and _floating_out(out):
                return _ints_as_floats(cls, args, kwargs, state)
            if type(out) is tuple:
                return tuple([wrap(o) for o in out])
            return wrap(out)
        ctx = cls.__new__(cls)
        ctx.needs_input_grad = needs
        ctx.saved_at = None
        token = _quiet(_QUIET)
        try:
            out = cls.forward(ctx, *raw, **kwargs)
        finally:
            _loud(token)
        if type(out) is tuple:
            results = tuple([wrap(o) for o in out])
            single = False
        else:
            results = (wrap(out),)
            single = True
        if _inference_seen:  # (once an inference_mode block has run: forgegrad._inference_tensors)
            record_graph = _inference_outputs(cls, ctx, args, kwargs, results, record_graph)
        if record_graph:
            ctx.parents = tuple([a if isinstance(a, Tensor) else None for a in args])
            ctx.call = (args, kwargs)  # what a differentiable backward rule recomputes from (create_graph)
            ctx.made_at = _vc.clock
            ctx.out_meta = tuple([(t._data.shape, t._data.dtype) for t in results])
            ctx.released = False
            _drop_inputs(ctx, cls, args, kwargs, results)  # what no backward rule reads is not kept alive
            skip = cls.non_differentiable_outputs
            for i, t in enumerate(results):
                if t._data.dtype.kind in "fcV" and i not in skip:  # V: bfloat16 (ml_dtypes), the only one kept
                    t.requires_grad = True
                    t._ctx = ctx
                    t._out_index = i
        elif cls.is_view and isinstance(args[0], Tensor) and args[0]._ctx is None and state.get("grad_enabled", True):
            _link_view(results[0], args[0])
        if ints_only and _floating_out(results):
            return _ints_as_floats(cls, args, kwargs, state)
        if recorder is not None:
            recorder.record(cls, args, kwargs, results)
        return results[0] if single else results

    def release(self) -> None:
        """Drop saved buffers once backward has used them (unless retain_graph=True), and the inputs' arrays:
        its parents become Edges (forgegrad._graph_memory), as the root keeps the graph alive to the pass's end."""
        self.saved_tensors = ()
        self.__dict__.clear()
        self.released = True
        _release_parents(self)


def _link_view(view, of) -> None:
    """Note ``of`` (a tensor without a node) as the base of ``view``, a view of it made outside the graph in
    grad mode, for an in-place write recorded through the view (forgegrad._view_rebase; torch refuses one
    into a view made under no_grad, and these views there cost nothing). A view of such a view notes the
    same base (views taken in a loop, ``x = x[1:]``, keep no chain of tensors alive)."""
    d = of._data
    if type(d) is _NDARRAY and d.base is not None:  # (an array that owns its memory is no view's)
        base = getattr(of, "_view_of", None)
        if base is not None and _vc.root(base._data) is _vc.root(d):
            of = base
    view._view_of = of


def _rebase_inputs(args) -> None:
    global _rebase_inputs
    from ._view_rebase import rebase_inputs  # (imports autograd: bound on first use)
    _rebase_inputs = rebase_inputs
    rebase_inputs(args)


class ToDevice(Function):
    """``Tensor.to(device)`` of a tensor that requires grad: the copy is a node of the graph, whose
    backward copies the gradient back to the source device."""

    any_device = True
    exact_dtype = True  # a float64 tensor stays float64 on the way (Tensor._wrap makes a CPU float64 float32)

    @staticmethod
    def forward(ctx, x, device):
        ctx.source = _devices.device_of(x)
        return _devices.transfer(x, device)

    @staticmethod
    def backward(ctx, grad):
        return _devices.transfer(grad, ctx.source)

    @staticmethod
    def differentiable_backward(ctx, args, kwargs, grad):  # (create_graph: forgegrad._create_graph)
        return grad.to(ctx.source), None


def _no_grad_zeros(shape, dtype, dev):
    """The gradient of an output that did not reach the loss. An integer output (max_pool's indices) never
    carries one: a read-only zero of stride 0 stands in, taking no memory (a new array was as large as the
    indices, at the pass's peak)."""
    if dev == "cpu" and dtype.kind not in "fc":
        return np.broadcast_to(np.zeros((), dtype), shape)
    return _devices.zeros(shape, dtype, dev)


def _slot_refs(slots, k) -> int:
    return _getrefcount(slots[k])


_getrefcount = getattr(sys, "getrefcount", None)  # (CPython's; elsewhere every addition makes a new array)
# the count of an array held only by a pending slot, as _slot_refs sees it (the list's reference and the call's)
_SOLE_REFS = _slot_refs([np.empty(1)], 0) if _getrefcount is not None else -1


def _add_to_slot(slots, k, g) -> None:
    """Add gradient ``g`` to the pending gradient ``slots[k]`` of an output (a tensor used more than once: a skip
    connection, a weight tied twice). In place when nothing but the slot holds that array: the engine's own sum
    of an earlier addition, or a rule's fresh result that no hook, retained ``.grad``, leaf, capture or caller
    sees (a reference count of the slot's alone, as torch's InputBuffer steals a gradient of use count 1; a
    view of it counts as a reference); else a new array, as before. One array of the output's size fewer
    allocated per addition (bench/bench_graph_memory.py counts them)."""
    old = slots[k]
    if (type(old) is _NDARRAY and type(g) is _NDARRAY and old.dtype is g.dtype and old.shape == g.shape
            and old.flags.owndata and old.flags.writeable):
        old = None  # (not counted below)
        if _slot_refs(slots, k) == _SOLE_REFS:
            np.add(slots[k], g, out=slots[k])
            return
    slots[k] = _devices.add(slots[k], g)


def _check_usable(node) -> None:
    """Refuse a node whose saved buffers were freed by an earlier pass, or whose saved tensors were written since."""
    if node.released:
        raise RuntimeError(
            "Trying to backward through the graph a second time (or directly access saved "
            "tensors after they have already been freed). Specify retain_graph=True if you "
            "need to backward through the graph a second time."
        )
    saved_at = node.saved_at
    if saved_at is not None and saved_at != _vc.clock:  # a write since it saved: into what it saved?
        _vc.check(node, node.saved_tensors, saved_at)


def _topo_order(*root_ctxs) -> List[Any]:
    """Function nodes reachable from the root nodes, each after every node that consumes its outputs."""
    order, seen = [], set()
    stack = [(c, False) for c in reversed(root_ctxs)]
    while stack:
        node, done = stack.pop()
        if done:
            order.append(node)
            continue
        if id(node) in seen:
            continue
        seen.add(id(node))
        stack.append((node, True))
        for p in (_parents_of(node) if _rebound else node.parents):
            if p is not None and p._ctx is not None and id(p._ctx) not in seen:
                stack.append((p._ctx, False))
    order.reverse()
    return order


def run_recomputed_backward(roots, grads, got: set, local=()):
    """The backward pass through a graph recomputed inside an outer pass (a checkpoint node's backward,
    forgegrad.utils.checkpoint): ``roots`` get ``grads``; leaves accumulate as usual, but the leaves' hooks and
    the pass observers are left to the outer pass (which counts the checkpoint node as a consumer of the
    leaves it reaches) and the callbacks queued meanwhile run at the outer pass's end. ``got`` collects the
    ids of the leaves that received a gradient. Returns {id(leaf): summed gradient} for the leaves with
    register_hook hooks (the outer pass runs them once it has every contribution), or None.

    Inside a grad() or backward(inputs=...) pass, only ``local`` (the recomputation's own leaves, whose .grad
    the caller reads) accumulate; the pass captures the gradients of its inputs (forgegrad._autograd_grad)."""
    state = _pass_state
    if state.grad_capture is not None:
        state.depth += 1
        try:
            return _recomputed_pass(roots, grads, local)
        finally:
            state.depth -= 1
    if len(roots) == 1:
        root, grad = roots[0], grads[0]
    else:
        seed = _Seed.__new__(_Seed)
        seed.parents, seed.grads = tuple(roots), tuple(grads)
        seed.made_at, seed.saved_at, seed.released = _vc.clock, None, False
        seed.out_meta = ((), np.dtype(np.float32)),
        seed.needs_input_grad = [True] * len(roots)
        root = Tensor._wrap_exact(np.zeros((), np.float32))
        root.requires_grad, root._ctx, root._out_index = True, seed, 0
        grad = np.zeros((), np.float32)
    state.depth += 1
    try:
        return _run_backward(root, grad, False, got)
    finally:
        state.depth -= 1


class _Seed(Function):
    """The node above several roots of one recomputed backward pass: hands each its gradient."""

    @staticmethod
    def backward(ctx, grad):
        return ctx.grads


def run_backward(root, grad: np.ndarray, retain_graph: bool = False) -> None:
    """Backpropagate grad from tensor root into the .grad of every leaf that requires grad, then run
    the callbacks queued (by gradient hooks) during the pass."""
    state = _pass_state
    callbacks = state.callbacks
    state.depth += 1
    queued = len(callbacks)
    capture, state.grad_capture = state.grad_capture, None  # (a backward() called from a hook of a grad() pass)
    try:
        _run_backward(root, grad, retain_graph)
    except BaseException:
        del callbacks[queued:]
        if state.depth == 1:
            state.node_callbacks.clear()  # a failed pass leaves no progress driver behind
        raise
    finally:
        state.depth -= 1
        state.grad_capture = capture
    todo = callbacks[queued:]
    del callbacks[queued:]  # taken off first: one that raises leaves none behind for the next pass
    for fn in todo:
        fn()


def _run_backward(root, grad: np.ndarray, retain_graph: bool, got=None) -> None:
    # numpy's RuntimeWarnings (inf * 0, log(0) in a gradient formula at an edge value) stay quiet, as torch's
    with np.errstate(all="ignore"):
        return _run_backward_pass(root, grad, retain_graph, got)


def _run_backward_pass(root, grad: np.ndarray, retain_graph: bool, got=None) -> None:
    # got: a recomputed pass (run_recomputed_backward): no leaf hooks, the ids of leaves reached go there
    if root._ctx is None:  # a leaf: its gradient is the seed itself
        if got is not None:
            got.add(id(root))
            if _HookHandle.live and getattr(root, "_grad_hooks", None):
                return {id(root): (root, grad)}
            root._accumulate_grad(grad)
            return None
        if _pass_observers:
            _notify_pass((), (root,))
        if getattr(root, "_grad_hooks", None):
            grad = _run_grad_hooks(root._grad_hooks, grad)
        root._accumulate_grad(grad)
        if getattr(root, "_post_hooks", None):
            _fire_post_hooks(root)
        return
    # A leaf's first gradient is adopted without a copy when the array is a fresh one that nothing
    # else holds: it owns its memory, is not the caller's seed, and has not been handed to another
    # leaf in this pass (Add returns one array for both inputs; optimisers and clip_grad_norm_
    # modify .grad in place, so two leaves must never share one).
    adopted = set()

    def to_leaf(leaf, g):
        if (leaf.grad is None and type(g) is _NDARRAY and g is not grad and g.base is None and g.flags.owndata
                and g.flags.writeable and g.dtype == leaf._data.dtype and id(g) not in adopted):
            adopted.add(id(g))
            leaf.grad = Tensor._wrap_exact(g)
        else:
            leaf._accumulate_grad(g, in_place=leaf.grad is None or id(leaf.grad._data) not in adopted)

    pending = {id(root._ctx): [None] * len(root._ctx.out_meta)}
    pending[id(root._ctx)][root._out_index] = grad
    order = _topo_order(root._ctx)
    if _pass_observers and got is None:
        _notify_pass(order)
    hooked = _HookHandle.live
    node_callbacks = _pass_state.node_callbacks
    uses = _hooked_leaf_uses(order) if hooked and got is None else None
    got_grad = set() if got is None else got
    # leaves with register_hook hooks: their gradient is summed over the pass, then hooked, then accumulated
    held = {} if uses or (hooked and got is not None) else None
    for node in order:
        gouts = pending.pop(id(node), None)
        if gouts is None:
            if uses:
                _count_down(node, uses, got_grad, held, to_leaf)
            continue
        _check_usable(node)
        # outputs that did not reach the loss get zeros on the device of those that did (a single output did)
        if len(gouts) > 1 and any(g is None for g in gouts) and node.materialize_grads:
            dev = _devices.device_of(next(g for g in gouts if g is not None))
            gouts = [g if g is not None else _no_grad_zeros(shape, dtype, dev)
                     for g, (shape, dtype) in zip(gouts, node.out_meta)]
        if hooked:
            gouts = _node_tensor_hooks(node, gouts)
        gins = type(node).backward(node, *gouts)
        if not isinstance(gins, tuple):
            gins = (gins,)
        parents = _parents_of(node) if _rebound or node.weak_inputs else node.parents
        if len(gins) < len(parents):
            gins = gins + (None,) * (len(parents) - len(gins))
        for parent, g in zip(parents, gins):
            if parent is None or g is None or not parent.requires_grad:
                continue
            if isinstance(g, np.generic):  # numpy turns 0-d results into scalars; kernels take arrays
                g = np.asarray(g)
            if type(g) is not _NDARRAY or type(parent._data) is not _NDARRAY:
                _check_device_grad(node, parent, g)
            elif g.dtype is not parent._data.dtype and g.dtype != parent._data.dtype:
                if g.dtype.kind == "c" and parent._data.dtype.kind != "c":
                    g = g.real  # a real tensor used in a complex op: the real part of its gradient (torch's)
                g = _dtypes.astype(g, parent._data.dtype)  # a gradient has its tensor's dtype (float32 <- float64 op)
            if g.shape != parent.shape:
                raise RuntimeError(
                    f"{type(node).__name__}.backward returned a gradient of shape {g.shape} for an "
                    f"input of shape {parent.shape}"
                )
            if parent._retains_grad and not (hooked and parent._ctx is not None and _retained_by_hooks(parent)):
                parent._accumulate_grad(g)
            if parent._ctx is None:
                if held is not None and getattr(parent, "_grad_hooks", None):
                    _hold(held, parent, g)
                else:
                    to_leaf(parent, g)
                if uses is not None or got is not None:
                    got_grad.add(id(parent))
            else:
                slots = pending.setdefault(id(parent._ctx), [None] * len(parent._ctx.out_meta))
                k = parent._out_index
                if slots[k] is None:
                    slots[k] = g
                else:
                    _add_to_slot(slots, k, g)
        inner_got = node.__dict__.get("inner_got") if hooked or got is not None else None
        if inner_got:  # a checkpoint node: the leaves its recomputed pass reached, and their held gradients
            got_grad.update(inner_got)
            for leaf, g in node.__dict__.get("inner_held", {}).values():
                if held is not None:
                    _hold(held, leaf, g)
                else:
                    to_leaf(leaf, g)
        if uses:
            _count_down(node, uses, got_grad, held, to_leaf)
        if node_callbacks:
            for fn in node_callbacks:
                fn()
        if not retain_graph:
            node.release()
        # this node's inputs and gradients are not kept alive through the next node's backward (the peak)
        parents = parent = gins = g = None
    return held if got is not None else None


from ._autograd_grad import backward, grad  # noqa: E402  (it uses the engine above)
from ._autograd_grad import recomputed_pass as _recomputed_pass  # noqa: E402
from . import _autograd_functional as functional  # noqa: E402  (forgegrad.autograd.functional, as torch's)
sys.modules[__name__ + ".functional"] = functional  # `import forgegrad.autograd.functional` finds it too
