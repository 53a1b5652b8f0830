"""forgegrad.autograd.grad, autograd.backward and Tensor.backward(inputs=...): backward passes that deliver the
gradients of chosen tensors only (torch's semantics).

A pass here visits the nodes of the graph that lead to one of the ``inputs`` (the others are not run: their
hooks do not fire and their saved buffers stay); the gradient reaching an input is captured there, after its
register_hook hooks, as torch's engine captures it. ``grad()`` returns the captured gradients and touches no
``.grad`` (post-accumulate hooks, through which data parallelism reduces gradients, do not fire, and the pass
observers are not told: a grad() call is not a training step); ``backward(inputs=...)`` accumulates them into
those inputs' ``.grad`` only, as a training backward (observers told, post-accumulate hooks fired). A
checkpointed region (forgegrad.utils.checkpoint) recomputes inside such a pass; its recomputed backward
captures the gradients of the inputs used inside it the same way (``recomputed_pass``).

With ``create_graph=True`` (gradients that are themselves differentiable) the pass is forgegrad._create_graph's,
which runs the ops' differentiable rules instead of their array rules.
"""
from __future__ import annotations

import warnings

import numpy as np

from . import autograd as _ag
from . import devices as _devices
from . import _version_counter as _vc
from ._tensor_hooks import _node_tensor_hooks, _run_grad_hooks
from .tensor import Tensor, _HookHandle, _seed_storage

_NDARRAY = np.ndarray
_UNUSED = ("The differentiated Tensor at index {} appears to not have been used in the graph. Set allow_unused=True "
           "if this is the desired behavior.")  # torch 2.13's words


class _Capture:
    """What one pass captures: the gradient summed for each leaf input (by id) and for each non-leaf input (by
    its node and output index). ``local``: ids of the leaves of a recomputed graph that accumulate as usual
    (a checkpoint's detached arguments, which its node reads back)."""

    def __init__(self, inputs, accumulate: bool):
        self.inputs = inputs
        self.accumulate = accumulate
        self.leaves = {}  # id(leaf) -> [leaf, summed gradient or None, finished]
        self.outputs = {}  # (id(node), k) -> [tensor, gradient or None]
        for t in inputs:
            if t._ctx is None:
                self.leaves.setdefault(id(t), [t, None, False])
            else:
                self.outputs.setdefault((id(t._ctx), t._out_index), [t, None])
        self.local = set()

    def finish(self, slot) -> None:
        """A leaf input's gradient is complete: its register_hook hooks run on it (their result is what is
        captured); backward(inputs=...) then accumulates it and fires its post-accumulate hooks."""
        leaf, g, done = slot
        if done or g is None:
            return
        slot[2] = True
        if getattr(leaf, "_grad_hooks", None):
            g = slot[1] = _run_grad_hooks(leaf._grad_hooks, g)
        if self.accumulate:
            leaf._accumulate_grad(g)
            if getattr(leaf, "_post_hooks", None):
                _ag._fire_post_hooks(leaf)

    def value(self, t):
        slot = self.leaves[id(t)] if t._ctx is None else self.outputs[(id(t._ctx), t._out_index)]
        return slot[1]


def _as_list(x, what: str) -> list:
    if isinstance(x, Tensor):
        return [x]
    if isinstance(x, (list, tuple)) and all(isinstance(t, Tensor) for t in x):
        return list(x)
    raise TypeError(f"{what} must be a Tensor or a sequence of Tensors, got {type(x).__name__}")


def _seeds(outputs, grad_outputs, fn: str) -> list:
    """One gradient array per output (ones for a one-element output given None, as torch)."""
    if grad_outputs is None:
        grad_outputs = [None] * len(outputs)
    elif isinstance(grad_outputs, Tensor):
        grad_outputs = [grad_outputs]
    else:
        grad_outputs = list(grad_outputs)
    if len(grad_outputs) != len(outputs):
        raise RuntimeError(f"{fn}: grad_outputs has {len(grad_outputs)} items but outputs has {len(outputs)}")
    seeds = []
    for i, (t, g) in enumerate(zip(outputs, grad_outputs)):
        if not t.requires_grad:
            raise RuntimeError(f"element {i} of tensors does not require grad and does not have a grad_fn")
        if g is None:
            if t._data.size != 1:
                raise RuntimeError(f"grad can be implicitly created only for scalar outputs; {fn}: output {i} has "
                                   f"shape {t.shape}, pass its gradient in grad_outputs")
            dev = _devices.device_of(t._data)
            g = np.ones(t.shape, t._data.dtype) if dev == "cpu" else _devices.full(t.shape, 1, t._data.dtype, dev)
        else:
            g = _seed_storage(g, t)
            if g.shape != t._data.shape:
                raise RuntimeError(f"{fn}: grad_outputs[{i}] has shape {g.shape}, expected {t._data.shape}")
            g = np.array(g, copy=True) if isinstance(g, _NDARRAY) else _devices.copy(g)
        seeds.append(g)
    return seeds


def _seed_root(outputs, seeds):
    """A tensor whose node hands each output its seed: one root for the pass."""
    seed = _ag._Seed.__new__(_ag._Seed)
    seed.parents, seed.grads = tuple(outputs), tuple(seeds)
    seed.made_at, seed.saved_at, seed.released = _vc.clock, None, False
    seed.out_meta = ((), np.dtype(np.float32)),
    seed.needs_input_grad = [True] * len(outputs)
    root = Tensor._wrap_exact(np.zeros((), np.float32))
    root.requires_grad, root._ctx, root._out_index = True, seed, 0
    return root


def _inputs_of(node) -> tuple:
    """``node``'s parents, and for a checkpoint node the leaves its recomputation reaches."""
    parents = _ag._parents_of(node) if _ag._rebound or node.weak_inputs else node.parents
    inner = node.__dict__.get("inner_leaves")
    return parents if inner is None else parents + inner


def _needed(order, cap: _Capture, targets: set) -> set:
    """ids of the nodes in ``order`` from which a target (a leaf input, a local leaf, the node of a non-leaf
    input that must run) is reachable; a checkpoint node reaches the leaves its recomputation uses too."""
    need = set()
    for node in reversed(order):  # producers first
        for p in _inputs_of(node):
            if p is None or not p.requires_grad:
                continue
            if (p._ctx is None and (id(p) in cap.leaves or id(p) in cap.local)) or \
                    (p._ctx is not None and (id(p._ctx) in need or (id(p._ctx), p._out_index) in cap.outputs)):
                need.add(id(node))
                break
        if id(node) in targets:
            need.add(id(node))
    return need


def _fit(node, parent, g):
    """A gradient from ``node``'s backward for ``parent``, as an array of its dtype and shape (the engine's
    checks)."""
    if isinstance(g, np.generic):
        g = np.asarray(g)
    if type(g) is not _NDARRAY or type(parent._data) is not _NDARRAY:
        _ag._check_device_grad(node, parent, g)
    elif g.dtype != parent._data.dtype:
        if g.dtype.kind == "c" and parent._data.dtype.kind != "c":
            g = g.real  # a real tensor used in a complex op: the real part of its gradient (torch's)
        g = g.astype(parent._data.dtype)
    if g.shape != parent.shape:
        raise RuntimeError(f"{type(node).__name__}.backward returned a gradient of shape {g.shape} for an input of "
                           f"shape {parent.shape}")
    return g


def _count_down(node, cap: _Capture, uses: dict) -> None:
    """``node`` has run (or got no gradient): its leaf inputs wait for one consumer fewer; one whose last
    consumer has run is finished (torch runs a leaf's hooks then, not at the end of the pass)."""
    for p in _inputs_of(node):
        if p is not None and id(p) in uses:
            uses[id(p)] -= 1
            if uses[id(p)] == 0:
                cap.finish(cap.leaves[id(p)])


def _run(root, grad, retain_graph: bool, cap: _Capture, outer: bool) -> None:
    # numpy's RuntimeWarnings (inf * 0, log(0) in a gradient formula at an edge value) stay quiet, as torch's
    with np.errstate(all="ignore"):
        _run_pass(root, grad, retain_graph, cap, outer)


def _run_pass(root, grad, retain_graph: bool, cap: _Capture, outer: bool) -> None:
    """The pass from ``root`` (seeded with ``grad``) through the nodes that lead to ``cap``'s inputs. ``outer``:
    not a checkpoint's recomputed pass (which leaves the leaf inputs to finish in the outer one)."""
    order = _ag._topo_order(root._ctx)
    targets = set()
    if cap.accumulate:  # backward(inputs=[a non-leaf]): its node runs, as torch's
        targets = {k[0] for k in cap.outputs}
    need = _needed(order, cap, targets)
    captured = {k[0] for k in cap.outputs}
    if outer and cap.accumulate and _ag._pass_observers:
        _ag._notify_pass([n for n in order if id(n) in need], only=cap.leaves)
    uses = {}
    if outer:
        for node in order:
            if id(node) in need:
                for p in _inputs_of(node):
                    if p is not None and p._ctx is None and id(p) in cap.leaves:
                        uses[id(p)] = uses.get(id(p), 0) + 1
    hooked = _HookHandle.live
    node_callbacks = _ag._pass_state.node_callbacks
    pending = {id(root._ctx): [None] * len(root._ctx.out_meta)}
    pending[id(root._ctx)][root._out_index] = grad
    for node in order:
        gouts = pending.pop(id(node), None)
        if gouts is None:
            if uses and id(node) in need:
                _count_down(node, cap, uses)
            continue
        if len(gouts) > 1 and any(g is None for g in gouts) and node.materialize_grads:
            dev = _devices.device_of(next(g for g in gouts if g is not None))
            gouts = [g if g is not None else _ag._no_grad_zeros(shape, dtype, dev)
                     for g, (shape, dtype) in zip(gouts, node.out_meta)]
        if hooked:
            gouts = _node_tensor_hooks(node, gouts)
        if id(node) in captured:
            for k, g in enumerate(gouts):
                slot = cap.outputs.get((id(node), k))
                if slot is not None and g is not None:
                    slot[1] = g if slot[1] is None else _devices.add(slot[1], g)
        if id(node) not in need:
            continue
        _ag._check_usable(node)
        gins = type(node).backward(node, *gouts)
        if not isinstance(gins, tuple):
            gins = (gins,)
        parents = _ag._parents_of(node) if _ag._rebound or node.weak_inputs else node.parents
        for parent, g in zip(parents, gins):
            if parent is None or g is None or not parent.requires_grad:
                continue
            if parent._ctx is None:
                slot = cap.leaves.get(id(parent))
                if slot is not None:
                    g = _fit(node, parent, g)
                    slot[1] = g if slot[1] is None else _devices.add(slot[1], g)
                elif id(parent) in cap.local:
                    parent._accumulate_grad(_fit(node, parent, g))
                continue
            key = id(parent._ctx)
            if key not in need and key not in captured:
                continue
            g = _fit(node, parent, g)
            if parent._retains_grad and not (hooked and _ag._retained_by_hooks(parent)):
                parent._accumulate_grad(g)
            slots = pending.setdefault(key, [None] * len(parent._ctx.out_meta))
            k = parent._out_index
            if slots[k] is None:
                slots[k] = g
            else:
                _ag._add_to_slot(slots, k, g)
        if uses:
            _count_down(node, cap, uses)
        if node_callbacks:
            for fn in node_callbacks:
                fn()
        if not retain_graph:
            node.release()
        # this node's inputs and gradients are not kept alive through the next node's backward (the peak)
        parents = parent = gins = g = None


def recomputed_pass(roots, grads, local) -> None:
    """A checkpoint's recomputed backward inside a grad()/backward(inputs=...) pass: the inputs used inside it
    are captured into the enclosing pass; ``local`` (its detached arguments) accumulate into their .grad."""
    cap = _ag._pass_state.grad_capture
    ids = {id(t) for t in local} - set(cap.leaves)
    cap.local |= ids
    try:
        _run(roots[0] if len(roots) == 1 else _seed_root(roots, grads), grads[0] if len(roots) == 1 else
             np.zeros((), np.float32), False, cap, False)
    finally:
        cap.local -= ids


def _pass(outputs, seeds, inputs, retain_graph: bool, accumulate: bool) -> _Capture:
    """Run one capturing pass (callbacks queued by hooks run at its end, as backward()'s)."""
    if _ag._rebound:  # a view whose base was written in place under autograd: its new node (as backward())
        from ._view_rebase import rebase_inputs
        rebase_inputs(tuple(outputs) + tuple(inputs))
    root = outputs[0] if len(outputs) == 1 and outputs[0]._ctx is not None else _seed_root(outputs, seeds)
    seed = seeds[0] if root is outputs[0] else np.zeros((), np.float32)
    cap = _Capture(inputs, accumulate)
    state = _ag._pass_state
    callbacks = state.callbacks
    prev = state.grad_capture
    state.grad_capture = cap
    state.depth += 1
    queued = len(callbacks)
    try:
        _run(root, seed, retain_graph, cap, True)
        for slot in cap.leaves.values():
            cap.finish(slot)
    except BaseException:
        del callbacks[queued:]
        raise
    finally:
        state.depth -= 1
        state.grad_capture = prev
    todo = callbacks[queued:]
    del callbacks[queued:]
    for fn in todo:
        fn()
    return cap


def _check_inputs(inputs, fn: str) -> None:
    if not inputs:
        raise RuntimeError(f"{fn}: inputs must not be empty (pass the tensors to differentiate with respect to)")
    for t in inputs:
        if not t.requires_grad:
            raise RuntimeError("One of the differentiated Tensors does not require grad")


def grad(outputs, inputs, grad_outputs=None, retain_graph=None, create_graph=False, only_inputs=True,
         allow_unused=None, is_grads_batched=False, materialize_grads=False):
    """The gradients of ``outputs`` with respect to ``inputs``, as torch.autograd.grad; no ``.grad`` changes.

    Args:
        outputs: a Tensor or a sequence of them (the differentiated function's outputs).
        inputs: a Tensor or a sequence of them, leaves or not, requiring grad.
        grad_outputs: the vector of the vector-Jacobian product, one per output (None: ones, for a
            one-element output).
        retain_graph: keep the saved buffers of the nodes run, for another pass (default: create_graph).
        create_graph: record the graph of the gradients, so that they can be differentiated again (double
            backward; an op without a differentiable rule raises NotImplementedError naming it).
        allow_unused: an input the outputs do not depend on gets None instead of an error (default:
            materialize_grads).
        is_grads_batched: the first dimension of each grad_output is a batch: the result has one gradient per
            batch row, stacked (torch vmaps the backward pass; here it runs once per row, same values).
        materialize_grads: zeros instead of None for an unused input.

    Returns a tuple with one Tensor (or None) per input. The register_hook hooks of the tensors on the way run,
    as torch's; post-accumulate hooks (data parallelism's gradient reduction) do not.
    """
    if not only_inputs:
        warnings.warn("only_inputs argument is deprecated and is ignored now (defaults to True). To accumulate "
                      "gradient for other parts of the graph, please use torch.autograd.backward.", stacklevel=2)
    if materialize_grads and allow_unused is False:
        raise ValueError("Expected allow_unused to be True or not passed when materialize_grads=True, but got: "
                         "allow_unused=False.")
    if allow_unused is None:
        allow_unused = materialize_grads
    if is_grads_batched:
        return _grad_batched(outputs, inputs, grad_outputs, retain_graph, create_graph, allow_unused,
                             materialize_grads)
    outputs = _as_list(outputs, "grad: outputs")
    inputs = _as_list(inputs, "grad: inputs")
    _check_inputs(inputs, "grad")
    seeds = _seeds(outputs, grad_outputs, "grad")
    if create_graph:
        found = _graph_pass(outputs, seeds, grad_outputs, inputs, retain_graph, False)
        result = []
        for i, (t, g) in enumerate(zip(inputs, found)):
            if g is None and not allow_unused:
                raise RuntimeError(_UNUSED.format(i))
            if g is None and materialize_grads:
                g = Tensor._wrap_exact(_devices.zeros(t.shape, t._data.dtype, _devices.device_of(t._data)))
            result.append(g)
        return tuple(result)
    cap = _pass(outputs, seeds, inputs, bool(create_graph if retain_graph is None else retain_graph), False)
    result = []
    for i, t in enumerate(inputs):
        g = cap.value(t)
        if g is None:
            if not allow_unused:
                raise RuntimeError(_UNUSED.format(i))
            result.append(Tensor._wrap_exact(_devices.zeros(t.shape, t._data.dtype, _devices.device_of(t._data)))
                          if materialize_grads else None)
        else:
            result.append(Tensor._wrap_exact(np.array(g, copy=True) if isinstance(g, _NDARRAY) else _devices.copy(g)))
    return tuple(result)


def _grad_batched(outputs, inputs, grad_outputs, retain_graph, create_graph, allow_unused, materialize_grads):
    """grad(..., is_grads_batched=True): one pass per row of the grad_outputs' batch dimension, stacked."""
    from .factories import stack
    outputs = _as_list(outputs, "grad: outputs")
    inputs = _as_list(inputs, "grad: inputs")
    _check_inputs(inputs, "grad")
    if grad_outputs is None:
        raise ValueError("grad: is_grads_batched=True needs grad_outputs, one Tensor per output with a leading batch "
                         "dimension")
    gos = [grad_outputs] if isinstance(grad_outputs, Tensor) else list(grad_outputs)
    if len(gos) != len(outputs):
        raise RuntimeError(f"grad: grad_outputs has {len(gos)} entries but there are {len(outputs)} outputs")
    for i, (g, o) in enumerate(zip(gos, outputs)):
        if not isinstance(g, Tensor):
            raise TypeError(f"grad: with is_grads_batched=True grad_outputs[{i}] must be a Tensor, got "
                            f"{type(g).__name__}")
        if g.dim() == 0 or tuple(g.shape[1:]) != tuple(o.shape):
            raise RuntimeError("If `is_grads_batched=True`, we interpret the first dimension of each grad_output as "
                               "the batch dimension. The sizes of the remaining dimensions are expected to match the "
                               "shape of corresponding output, but a mismatch was detected: grad_output"
                               f"[{i}] has a shape of {tuple(g.shape)} and output[{i}] has a shape of "
                               f"{tuple(o.shape)}. If you only want some tensors in `grad_output` to be considered "
                               "batched, consider using vmap.")
    sizes = [g.shape[0] for g in gos]
    if any(n != sizes[0] for n in sizes):
        raise ValueError("vmap: Expected all tensors to have the same size in the mapped dimension, got sizes "
                         f"{sizes} for the mapped dimension")
    rows = []
    for b in range(sizes[0]):
        last = b == sizes[0] - 1
        rows.append(grad(outputs, inputs, [g[b] for g in gos], retain_graph=retain_graph if last else True,
                         create_graph=create_graph, allow_unused=True))
    result = []
    for i, t in enumerate(inputs):
        column = [r[i] for r in rows]
        if not column:  # an empty batch
            result.append(Tensor._wrap_exact(_devices.zeros((0,) + tuple(t.shape), t._data.dtype,
                                                            _devices.device_of(t._data))))
        elif column[0] is None:
            if not allow_unused:
                raise RuntimeError(_UNUSED.format(i))
            # torch's: a materialized unused gradient has the input's shape, without the batch dimension
            result.append(Tensor._wrap_exact(_devices.zeros(t.shape, t._data.dtype, _devices.device_of(t._data)))
                          if materialize_grads else None)
        else:
            result.append(stack(column, 0))
    return tuple(result)


def backward(tensors, grad_tensors=None, retain_graph=None, create_graph=False, grad_variables=None, inputs=None):
    """Accumulate the gradients of ``tensors`` into the leaves' ``.grad`` (those of ``inputs`` only, when given),
    as torch.autograd.backward; ``tensors.backward()`` for one tensor. With ``create_graph`` the gradients keep
    their graph (``.grad + g`` out of place), so that ``.grad`` can be differentiated again."""
    if grad_variables is not None:
        if grad_tensors is not None:
            raise RuntimeError("backward: pass grad_tensors only (grad_variables is its deprecated name)")
        grad_tensors = grad_variables
    tensors = _as_list(tensors, "backward: tensors")
    seeds = _seeds(tensors, grad_tensors, "backward")
    if create_graph:
        if inputs is not None:
            inputs = _as_list(inputs, "backward: inputs")
            _check_inputs(inputs, "backward")
            for t in inputs:
                if t._ctx is not None:
                    t.retain_grad()
        _graph_pass(tensors, seeds, grad_tensors, inputs, retain_graph, True)
        return
    retain = bool(retain_graph)
    if inputs is not None:
        inputs = _as_list(inputs, "backward: inputs")
        _check_inputs(inputs, "backward")
        for t in inputs:
            if t._ctx is not None:
                t.retain_grad()  # torch's: a non-leaf input gets its .grad
        _pass(tensors, seeds, inputs, retain, True)
        return
    root = tensors[0] if len(tensors) == 1 else _seed_root(tensors, seeds)
    _ag.run_backward(root, seeds[0] if len(tensors) == 1 else np.zeros((), np.float32), retain_graph=retain)


def _graph_pass(outputs, seeds, given, inputs, retain_graph, accumulate: bool):
    """A create_graph pass (forgegrad._create_graph): the seeds are Tensors (a gradient given as a Tensor is used
    as it is, graph and all: ``grad(y, x, v, create_graph=True)`` is differentiable in ``v`` too)."""
    from ._create_graph import run_pass
    if isinstance(given, Tensor):
        given = [given]
    given = [None] * len(outputs) if given is None else list(given)
    tseeds = []
    for t, g, arr in zip(outputs, given, seeds):
        if isinstance(g, Tensor):
            tseeds.append(g if g._data.dtype == t._data.dtype else g._cast(t._data.dtype))
        else:
            tseeds.append(Tensor._wrap_exact(arr))
    retain = True if retain_graph is None else bool(retain_graph)
    state = _ag._pass_state
    callbacks = state.callbacks
    state.depth += 1
    queued = len(callbacks)
    try:
        found = run_pass(outputs, tseeds, inputs, retain, accumulate)
    except BaseException:
        del callbacks[queued:]
        raise
    finally:
        state.depth -= 1
    todo = callbacks[queued:]
    del callbacks[queued:]
    for fn in todo:
        fn()
    return found
