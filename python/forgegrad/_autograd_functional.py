"""forgegrad.autograd.functional: vjp, jvp, jacobian, hessian, hvp and vhp of a function, as
torch.autograd.functional's (same signatures, same results and output structure).

Built on ``autograd.grad``; the second-order ones (hessian, hvp, vhp) and jvp use ``create_graph=True``
(the ops' differentiable rules, ops/_double_backward.py). jvp and hvp use the double-vjp trick torch uses
without forward mode: the vjp ``u -> J^T u`` is linear in ``u``, so differentiating it with respect to ``u``
gives ``J v``. ``vectorize=True`` and ``strategy="forward-mode"`` (which torch allows only with vectorize) give the
same Jacobian as the default: one backward pass per output element, torch's refusals kept.

A tensor argument (``inputs``, ``v``) may be a Tensor or a tuple of them; results follow torch's rule: a tuple
where the argument or the function's output was a tuple, a Tensor otherwise.
"""
from __future__ import annotations

from typing import Callable

import numpy as np

from .autograd import enable_grad, grad
from .tensor import Tensor

__all__ = ["vjp", "jvp", "jacobian", "hessian", "hvp", "vhp"]


def _as_tuple(x, arg: str, fn: str):
    """(tuple of Tensors, was it a tuple)."""
    if isinstance(x, Tensor):
        return (x,), False
    if isinstance(x, (tuple, list)) and all(isinstance(t, Tensor) for t in x):
        return tuple(x), True
    raise TypeError(f"The {arg} given to {fn} must be either a Tensor or a tuple of Tensors but the value at index "
                    f"0 has type {type(x).__name__}." if isinstance(x, (tuple, list)) else
                    f"The {arg} given to {fn} must be either a Tensor or a tuple of Tensors but the given {arg} has "
                    f"type {type(x).__name__}.")


def _grad_copies(inputs, create_graph: bool):
    """Fresh leaves (or graph-keeping aliases with create_graph) of ``inputs`` that require grad, as torch's
    _grad_preprocess: the function is differentiated at their values, the callers' tensors untouched."""
    if create_graph:
        return tuple(t if t.requires_grad else t.detach().requires_grad_(True) for t in inputs)
    return tuple(t.detach().requires_grad_(True) for t in inputs)


def _out(x, was_tuple: bool):
    return x if was_tuple else x[0]


def _detach(xs, create_graph: bool):
    return tuple(x if create_graph or x is None else x.detach() for x in xs)


def _zeros_like(t: Tensor) -> Tensor:
    return Tensor._wrap_exact(np.zeros(t.shape, t._data.dtype))


def _grads(outputs, inputs, grad_outputs, create_graph: bool, strict: bool, fn: str, retain_graph=None):
    """grad() with torch.autograd.functional's rules: an input the outputs do not reach gets zeros, or an error
    with ``strict``."""
    outputs = [o for o in outputs if o is not None]
    if not outputs or not any(o.requires_grad for o in outputs):
        found = [None] * len(inputs)
    else:
        used = [(o, g) for o, g in zip(outputs, grad_outputs) if o.requires_grad]
        found = list(grad([o for o, _ in used], list(inputs), [g for _, g in used], create_graph=create_graph,
                          allow_unused=True, retain_graph=True if retain_graph is None else retain_graph))
    for i, g in enumerate(found):
        if g is None:
            if strict:
                raise RuntimeError(f"The output of the user-provided function is independent of input {i}. This is "
                                   f"not allowed in strict mode ({fn}).")
            found[i] = _zeros_like(inputs[i])
    return tuple(found)


def _call(func: Callable, inputs, fn: str):
    out = func(*inputs)
    outs, is_tuple = _as_tuple(out, "outputs of the user-provided function", fn)
    return outs, is_tuple


def _check_v(v, like, fn: str):
    if len(v) != len(like):
        raise RuntimeError(f"{fn}: v has {len(v)} tensors but there are {len(like)} to match")
    for i, (a, b) in enumerate(zip(v, like)):
        if tuple(a.shape) != tuple(b.shape):
            raise RuntimeError(f"{fn}: entry {i} of v has shape {tuple(a.shape)}, expected {tuple(b.shape)}")


def vjp(func: Callable, inputs, v=None, create_graph: bool = False, strict: bool = False):
    """(func(inputs), v^T J): the vector-Jacobian product of ``func`` at ``inputs``. ``v`` may be omitted when
    func returns a single one-element tensor."""
    with enable_grad():
        inputs, in_tuple = _as_tuple(inputs, "inputs", "vjp")
        inputs = _grad_copies(inputs, create_graph)
        outs, out_tuple = _call(func, inputs, "vjp")
        if v is None:
            if len(outs) != 1 or outs[0].numel() != 1:
                raise RuntimeError("The vector v can only be None if the user-provided function returns a single "
                                   "Tensor with a single element.")
            v = (Tensor._wrap_exact(np.ones(outs[0].shape, outs[0]._data.dtype)),)
        else:
            v, _ = _as_tuple(v, "v", "vjp")
            _check_v(v, outs, "vjp")
        result = _grads(outs, inputs, v, create_graph, strict, "vjp")
    return _out(_detach(outs, create_graph), out_tuple), _out(_detach(result, create_graph), in_tuple)


def jvp(func: Callable, inputs, v=None, create_graph: bool = False, strict: bool = False):
    """(func(inputs), J v): the Jacobian-vector product of ``func`` at ``inputs`` (the double-vjp trick). ``v``
    may be omitted when there is one one-element input."""
    with enable_grad():
        inputs, in_tuple = _as_tuple(inputs, "inputs", "jvp")
        inputs = _grad_copies(inputs, create_graph)
        if v is None:
            if len(inputs) != 1 or inputs[0].numel() != 1:
                raise RuntimeError("The vector v can only be None if the input to the user-provided function is a "
                                   "single Tensor with a single element.")
            v = (Tensor._wrap_exact(np.ones(inputs[0].shape, inputs[0]._data.dtype)),)
        else:
            v, _ = _as_tuple(v, "v", "jvp")
            _check_v(v, inputs, "jvp")
        outs, out_tuple = _call(func, inputs, "jvp")
        # u: a dummy cotangent; g(u) = J^T u is linear in u, and d(g . v)/du = J v
        us = tuple(_zeros_like(o).requires_grad_(True) for o in outs)
        gs = _grads(outs, inputs, us, True, strict, "jvp")
        found = [None] * len(outs)
        live = [(g, vi) for g, vi in zip(gs, v) if g.requires_grad]
        if live:
            found = list(grad([g for g, _ in live], list(us), [vi for _, vi in live], create_graph=create_graph,
                              allow_unused=True, retain_graph=True))
        result = tuple(f if f is not None else _zeros_like(o) for f, o in zip(found, outs))
    return _out(_detach(outs, create_graph), out_tuple), _out(_detach(result, create_graph), out_tuple)


def jacobian(func: Callable, inputs, create_graph: bool = False, strict: bool = False, vectorize: bool = False,
             strategy: str = "reverse-mode"):
    """The Jacobian of ``func`` at ``inputs``: for one input and one output a Tensor of shape
    ``output.shape + input.shape``; a tuple over inputs, outputs (or a tuple of tuples, outputs first) where
    those are tuples, as torch's. One backward pass per output element (reverse mode), whatever ``vectorize`` and
    ``strategy`` say (see _check_strategy)."""
    _check_strategy(strategy, create_graph, strict, vectorize)
    with enable_grad():
        inputs, in_tuple = _as_tuple(inputs, "inputs", "jacobian")
        inputs = _grad_copies(inputs, create_graph)
        outs, out_tuple = _call(func, inputs, "jacobian")
        table = []
        for out in outs:
            rows = [[] for _ in inputs]
            flat = out.reshape(-1)
            for k in range(flat.shape[0]):
                seed = np.zeros(flat.shape[0], out._data.dtype)
                seed[k] = 1
                if out.requires_grad:
                    gs = _grads([out], inputs, [Tensor._wrap_exact(seed.reshape(out.shape))], create_graph, strict,
                                "jacobian")
                else:
                    gs = _grads([], inputs, [], create_graph, strict, "jacobian")
                for i, g in enumerate(gs):
                    rows[i].append(g)
            jac = []
            for i, t in enumerate(inputs):
                if rows[i]:
                    from .factories import stack
                    j = stack(rows[i], dim=0).reshape(tuple(out.shape) + tuple(t.shape))
                else:
                    j = Tensor._wrap_exact(np.zeros(tuple(out.shape) + tuple(t.shape), t._data.dtype))
                jac.append(j if create_graph else j.detach())
            table.append(tuple(jac))
    if out_tuple:
        return tuple(_out(row, in_tuple) for row in table)
    return _out(table[0], in_tuple)


def _check_strategy(strategy: str, create_graph: bool, strict: bool, vectorize: bool) -> None:
    """torch's rules for jacobian's strategy and vectorize. Both strategies and both vectorize settings compute the
    same Jacobian here (one backward pass per output element; forgegrad has no forward-mode AD and its vmap loops),
    so they differ only in what torch refuses."""
    if strategy not in ("forward-mode", "reverse-mode"):
        raise AssertionError('Expected strategy to be either "forward-mode" or "reverse-mode". Hint: If your '
                             'function has more outputs than inputs, "forward-mode" tends to be more performant. '
                             'Otherwise, prefer to use "reverse-mode".')
    if strategy == "forward-mode":
        if create_graph:
            raise NotImplementedError('torch.autograd.functional.jacobian: `create_graph=True` and '
                                      '`strategy="forward-mode"` are not supported together (yet). Please either '
                                      'set `create_graph=False` or `strategy="reverse-mode"`.')
        if strict:
            raise RuntimeError('torch.autograd.functional.jacobian: `strict=True` and `strategy="forward-mode"` are '
                               'not supported together (yet). Please either set `strict=False` or '
                               '`strategy="reverse-mode"`.')
        if not vectorize:
            raise NotImplementedError("Computing Jacobian using forward-AD or forward-over-reverse Hessian is only "
                                      "implemented for `vectorize=True`.")
    elif vectorize and strict:
        raise RuntimeError("torch.autograd.functional.jacobian: `strict=True` and `vectorized=True` are not "
                           "supported together. Please either set `strict=False` or `vectorize=False`.")


def _scalar_output(func, fn: str):
    def wrapped(*inputs):
        out = func(*inputs)
        outs, is_tuple = _as_tuple(out, "outputs of the user-provided function", fn)
        if is_tuple or outs[0].numel() != 1:
            raise RuntimeError(f"The function given to {fn} should return a single Tensor with a single element, "
                               f"got {'a tuple' if is_tuple else f'shape {tuple(outs[0].shape)}'}")
        return outs[0].reshape(())
    return wrapped


def hessian(func: Callable, inputs, create_graph: bool = False, strict: bool = False, vectorize: bool = False,
            outer_jacobian_strategy: str = "reverse-mode"):
    """The Hessian of a scalar function ``func`` at ``inputs``: shape ``input.shape + input.shape`` for one input,
    a tuple of tuples (input i, input j) for a tuple of inputs, as torch's."""
    if outer_jacobian_strategy not in ("forward-mode", "reverse-mode"):
        raise AssertionError('Expected strategy to be either "forward-mode" or "reverse-mode".')
    inputs_t, in_tuple = _as_tuple(inputs, "inputs", "hessian")
    scalar = _scalar_output(func, "hessian")

    def gradient(*xs):
        with enable_grad():
            out = scalar(*xs)
            return _grads([out], xs, [Tensor._wrap_exact(np.ones((), out._data.dtype))], True, strict, "hessian")

    res = jacobian(gradient, inputs_t, create_graph=create_graph, strict=strict, vectorize=vectorize,
                   strategy=outer_jacobian_strategy)
    if not in_tuple:
        return res[0][0]
    return res


def vhp(func: Callable, inputs, v=None, create_graph: bool = False, strict: bool = False):
    """(func(inputs), v^T H): the vector-Hessian product of a scalar function at ``inputs``."""
    with enable_grad():
        inputs, in_tuple = _as_tuple(inputs, "inputs", "vhp")
        inputs = _grad_copies(inputs, create_graph)
        v = _hvp_vector(v, inputs, "vhp")
        out = _scalar_output(func, "vhp")(*inputs)
        gs = _grads([out], inputs, [Tensor._wrap_exact(np.ones((), out._data.dtype))], True, strict, "vhp")
        live = [(g, vi, i) for i, (g, vi) in enumerate(zip(gs, v)) if g.requires_grad]
        result = _grads([g for g, _, _ in live], inputs, [vi for _, vi, _ in live], create_graph, strict, "vhp")
    return _detach((out,), create_graph)[0], _out(_detach(result, create_graph), in_tuple)


def hvp(func: Callable, inputs, v=None, create_graph: bool = False, strict: bool = False):
    """(func(inputs), H v): the Hessian-vector product of a scalar function at ``inputs`` (the double-vjp trick,
    as torch's; equal to vhp's for a twice continuously differentiable function)."""
    with enable_grad():
        inputs, in_tuple = _as_tuple(inputs, "inputs", "hvp")
        inputs = _grad_copies(inputs, create_graph)
        v = _hvp_vector(v, inputs, "hvp")
        out = _scalar_output(func, "hvp")(*inputs)
        gs = _grads([out], inputs, [Tensor._wrap_exact(np.ones((), out._data.dtype))], True, strict, "hvp")
        us = tuple(_zeros_like(t).requires_grad_(True) for t in inputs)
        live = [(g, u) for g, u in zip(gs, us) if g.requires_grad]
        if live:
            back = _grads([g for g, _ in live], inputs, [u for _, u in live], True, strict, "hvp")
            keep = [(b, vi) for b, vi in zip(back, v) if b.requires_grad]
            result = _grads([b for b, _ in keep], us, [vi for _, vi in keep], create_graph, strict, "hvp")
        else:
            result = _grads([], us, [], create_graph, strict, "hvp")
    return _detach((out,), create_graph)[0], _out(_detach(result, create_graph), in_tuple)


def _hvp_vector(v, inputs, fn: str):
    if v is None:
        if len(inputs) != 1 or inputs[0].numel() != 1:
            raise RuntimeError("The vector v can only be None if the input to the user-provided function is a single "
                               "Tensor with a single element.")
        return (Tensor._wrap_exact(np.ones(inputs[0].shape, inputs[0]._data.dtype)),)
    v, _ = _as_tuple(v, "v", fn)
    _check_v(v, inputs, fn)
    return v
