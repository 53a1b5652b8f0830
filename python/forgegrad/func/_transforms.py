"""grad, grad_and_value, vjp, jvp, linearize, jacrev, jacfwd and hessian with torch.func's names, arguments
and output structures, built on forgegrad's reverse-mode autograd.

Each transform runs ``func`` on fresh aliases of the differentiated inputs (a view of an input that already
requires grad, a detached leaf otherwise), so only the uses of those count, as torch's levels do. When the
transform sits inside another (``grad(grad(f))``, ``jacrev(jacrev(f))``) or an input already requires grad, the
gradients are taken with ``create_graph=True`` so that they can be differentiated again; otherwise the results
are detached. forgegrad has no forward-mode AD: jvp and linearize use the double-vjp trick (the vjp
``u -> J^T u`` is linear in ``u``; its vjp with ``v`` is ``J v``), and jacfwd builds the same Jacobian as
jacrev. jacrev takes all rows of a Jacobian in one backward pass, the one-hot cotangents as one vmap batch
(torch's vmap over vjp_fn); inside a batched vmap the rows are a batched level of their own over the vmap's
physical graph (_batched.inner_level).

Inside a batched vmap (see _vmap.py) every transform runs batched: the differentiated inputs become batched
aliases (an unbatched one acts as expanded to the batch) and autograd runs on the physical tensors, so
vmap(grad), vmap(jvp) (batched primals and tangents), vmap(jacrev/jacfwd/hessian) are one call over the batch.
A vjp_fn or linearize's jvp_fn made outside the vmap and called on batched cotangents/tangents runs its plain
graph's differentiable backward rules (forgegrad._create_graph) on them: one pass for the batch.
"""
from __future__ import annotations

import contextlib
import functools
import threading

from ..autograd import enable_grad
from ..autograd import grad as _autograd_grad
from ..tensor import Tensor
from ._batched import NeedLoop, batch_size, is_batched, phys, wrap
from ._pytree import tree_flatten, tree_unflatten

__all__ = ["grad", "grad_and_value", "vjp", "jvp", "linearize", "jacrev", "jacfwd", "hessian"]

_state = threading.local()


def _depth() -> int:
    return getattr(_state, "depth", 0)


@contextlib.contextmanager
def _level():
    """Marks the call of a transformed function: a transform inside keeps its gradients' graph."""
    _state.depth = _depth() + 1
    try:
        yield
    finally:
        _state.depth -= 1


def _zeros_like(t: Tensor) -> Tensor:
    from .._functions import zeros_like
    return wrap(zeros_like(t._phys)) if is_batched(t) else zeros_like(t)


def _ones_like(t: Tensor) -> Tensor:
    from .._functions import ones_like
    return wrap(ones_like(t._phys)) if is_batched(t) else ones_like(t)


def _zero_leaf(t: Tensor) -> Tensor:
    """Zeros shaped as ``t`` that require grad (a batched one's physical tensor is the leaf)."""
    from .._functions import zeros_like
    if is_batched(t):
        return wrap(zeros_like(t._phys).requires_grad_(True))
    return zeros_like(t).requires_grad_(True)


def _any_requires_grad(tree) -> bool:
    return any(isinstance(t, Tensor) and t.requires_grad for t in tree_flatten(tree)[0])


def _alias(t) -> Tensor:
    if not isinstance(t, Tensor):
        raise ValueError(f"Thing passed to transform API must be Tensor, got {type(t)}")
    if not t.is_floating_point():
        raise RuntimeError("only Tensors of floating point dtype can require gradients")
    if is_batched(t):
        p = t._phys
        return wrap(p.view_as(p) if p.requires_grad else p.detach().requires_grad_(True))
    a = t.view_as(t) if t.requires_grad else t.detach().requires_grad_(True)
    b = batch_size()
    if b is not None:
        # inside a batched vmap an unbatched input acts as expanded to the batch: the gradient with respect to
        # the expansion is each element's own (the elements' computations are independent)
        return wrap(a.unsqueeze(0).expand((b,) + tuple(a.shape)))
    return a


def _argnums(argnums, nargs: int):
    """(normalized argnums as a tuple, was it an int)."""
    if isinstance(argnums, bool) or not isinstance(argnums, (int, tuple)):
        raise RuntimeError(f"argnums must be int or Tuple[int, ...], got: {type(argnums)}")
    single = isinstance(argnums, int)
    nums = (argnums,) if single else argnums
    if not nums:
        raise RuntimeError("argnums must be non-empty")
    out = []
    for a in nums:
        if isinstance(a, bool) or not isinstance(a, int):
            raise RuntimeError(f"argnums must be int or Tuple[int, ...], got: {type(argnums)}")
        if a < -nargs or a >= nargs:
            raise RuntimeError(f"Got argnum={a}, but only {nargs} positional inputs")
        out.append(a + nargs if a < 0 else a)
    if len(set(out)) != len(out):
        raise RuntimeError(f"argnums elements must be unique, got {argnums}")
    return tuple(out), single


def _wrap_args(args, nums):
    """(args with the argnums' tensors replaced by aliases, [(alias leaves, spec) per argnum], did any of the
    given tensors require grad)."""
    args = list(args)
    diff = []
    live = False
    for i in nums:
        leaves, spec = tree_flatten(args[i])
        live = live or any(isinstance(t, Tensor) and t.requires_grad for t in leaves)
        aliases = [_alias(t) for t in leaves]
        args[i] = tree_unflatten(aliases, spec)
        diff.append((aliases, spec))
    return args, diff, live


def _others_require_grad(args, nums, kwargs) -> bool:
    """Does a tensor outside the differentiated arguments require grad (then the results keep a graph)."""
    return any(_any_requires_grad(a) for i, a in enumerate(args) if i not in nums) or (
        bool(kwargs) and _any_requires_grad(kwargs))


def _plain_graph_pass(outputs, inputs, cotangents):
    """Batched cotangents through a graph built outside the batched vmap (a vjp_fn or linearize's jvp_fn made
    outside it, jacrev's rows): forgegrad's differentiable backward pass (_create_graph) runs each node's backward
    rule as forgegrad ops, so the batched cotangents meet the node's plain saved inputs in the batching rules: one
    pass for the whole batch, as torch's vmap over a backward. A node without such a rule (or whose rule has no
    batching rule) loops."""
    from .._create_graph import run_pass
    try:
        return run_pass(list(outputs), list(cotangents), list(inputs), True, False)
    except NotImplementedError as e:
        raise NeedLoop(f"backward: {e}") from None


def _batched_grad(b: int, outputs, inputs, cotangents, create_graph: bool):
    """_grad inside a batched vmap. Inputs that are batched aliases (made inside the vmap): autograd.grad of the
    physical tensors (an unbatched output reaches none of them). Inputs and outputs of a graph made outside:
    _plain_graph_pass."""
    if not any(is_batched(t) for t in inputs) and not any(is_batched(o) for o in outputs):
        found = _plain_graph_pass(outputs, inputs, cotangents)
        return [g if g is None or create_graph else g.detach() for g in found]
    if not all(is_batched(t) for t in inputs):
        raise NeedLoop("a vjp inside vmap mixing batched and unbatched inputs")
    outs, cts = [], []
    for o, c in zip(outputs, cotangents):
        if not is_batched(c) and c.requires_grad:
            raise NeedLoop("a cotangent that requires grad")  # its gradient would sum over the batch
        if is_batched(o):
            outs.append(o._phys)
            cts.append(phys(c, b))
    if not outs:
        return [None] * len(inputs)
    found = _autograd_grad(outs, [t._phys for t in inputs], cts, retain_graph=True, create_graph=create_graph,
                           allow_unused=True)
    return [wrap(g) if g is not None else None for g in found]


def _grad(outputs, inputs, cotangents, create_graph: bool):
    """autograd.grad of the ``outputs`` that require grad with their cotangents, None for an input they do not
    reach; inside a batched vmap, see _batched_grad."""
    used = [(o, c) for o, c in zip(outputs, cotangents) if o.requires_grad]
    if not used or not inputs:
        return [None] * len(inputs)
    outputs, cotangents = [o for o, _ in used], [c for _, c in used]
    b = batch_size()
    if b is not None:
        return _batched_grad(b, outputs, inputs, cotangents, create_graph)
    return list(_autograd_grad(outputs, list(inputs), cotangents, retain_graph=True, create_graph=create_graph,
                               allow_unused=True))


def _vjp(outputs, inputs, cotangents, create_graph: bool):
    """autograd.grad with zeros for an input the outputs do not reach (torch.func's rule)."""
    found = _grad(outputs, inputs, cotangents, create_graph)
    return [g if g is not None else _zeros_like(t) for g, t in zip(found, inputs)]


def _detach(tree, keep: bool):
    if keep:
        return tree
    leaves, spec = tree_flatten(tree)
    return tree_unflatten([t.detach() if isinstance(t, Tensor) else t for t in leaves], spec)


def _split_aux(out, has_aux: bool, who: str):
    if not has_aux:
        return out, None
    if not (isinstance(out, tuple) and len(out) == 2):
        raise RuntimeError(f"{who}: output of function f should be a tuple: (output, aux) if has_aux is True")
    for t in tree_flatten(out[1])[0]:
        if not isinstance(t, Tensor):  # torch's: aux is a pytree of tensors only
            raise RuntimeError(f"Expected tensors, got unsupported type {type(t)}")
    return out


def _tensor_leaves(out, who: str):
    leaves, spec = tree_flatten(out)
    for t in leaves:
        if not isinstance(t, Tensor):
            raise RuntimeError(f"{who}: expected f(*primals) to return only tensors, got unsupported type {type(t)}")
    return leaves, spec


def _call_on_wrapped(func, argnums, has_aux: bool, who: str, args, kwargs):
    """``func`` called (under enable_grad, by the caller) on fresh leaves in place of its ``argnums`` arguments:
    (whether argnums is one int, [(leaves, spec)] per differentiated argument, whether results keep their graph,
    func's output, its aux)."""
    nums, single = _argnums(argnums, len(args))
    other = _depth() > 0 or _others_require_grad(args, nums, kwargs)
    args, diff, live = _wrap_args(args, nums)
    with _level():
        out = func(*args, **kwargs)
    out, aux = _split_aux(out, has_aux, who)
    return single, diff, other or live, out, aux


def grad_and_value(func, argnums=0, has_aux: bool = False):
    """A function returning (gradient of ``func`` with respect to the ``argnums`` arguments, ``func``'s value),
    as torch.func.grad_and_value; ``func`` returns a one-element scalar tensor (and an aux with ``has_aux``)."""
    who = "grad_and_value(f)(*args)"

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        with enable_grad():
            single, diff, keep, out, aux = _call_on_wrapped(func, argnums, has_aux, who, args, kwargs)
            if not isinstance(out, Tensor):
                raise RuntimeError(f"{who}: Expected f(*args) to return a Tensor, got {type(out)}")
            if out.dim() != 0:
                raise RuntimeError(f"{who}: Expected f(*args) to return a scalar Tensor, got tensor with "
                                   f"{out.dim()} dims. Maybe you wanted to use the vjp or jacrev APIs instead?")
            flat = [t for leaves, _ in diff for t in leaves]
            gs = _vjp([out], flat, [_ones_like(out)], keep)
        grads, k = [], 0
        for leaves, spec in diff:
            grads.append(tree_unflatten(gs[k:k + len(leaves)], spec))
            k += len(leaves)
        g = grads[0] if single else tuple(grads)
        g, out = _detach(g, keep), _detach(out, keep)
        if has_aux:
            return g, (out, _detach(aux, keep))
        return g, out

    return wrapper


def grad(func, argnums=0, has_aux: bool = False):
    """The gradient of ``func`` (returning a scalar tensor) with respect to its ``argnums`` arguments (an int or
    a tuple; each argument a tensor or a pytree of them), as torch.func.grad; with ``has_aux``, ``func`` returns
    (scalar, aux) and the result is (gradient, aux)."""
    gv = grad_and_value(func, argnums, has_aux)

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        g, value = gv(*args, **kwargs)
        return (g, value[1]) if has_aux else g

    return wrapper


def vjp(func, *primals, has_aux: bool = False):
    """(``func(*primals)``, vjp_fn[, aux]): ``vjp_fn(cotangents)`` (cotangents shaped as the output) returns a
    tuple with the vector-Jacobian product for each primal, as torch.func.vjp. vjp_fn may be called repeatedly."""
    with enable_grad():
        args, diff, live = _wrap_args(primals, range(len(primals)))
        keep = _depth() > 0 or live
        with _level():
            out = func(*args)
        out, aux = _split_aux(out, has_aux, "vjp(f, *primals)")
        outs, out_spec = _tensor_leaves(out, "vjp(f, *primals)")
    flat = [t for leaves, _ in diff for t in leaves]

    def vjp_fn(cotangents, *, retain_graph=True, create_graph=None):
        cts, ct_spec = tree_flatten(cotangents)
        if ct_spec != out_spec:
            raise RuntimeError("Expected pytree structure of cotangents to be the same as pytree structure of "
                               f"outputs to the function. cotangents: {ct_spec}, primal output: {out_spec}")
        for i, (c, o) in enumerate(zip(cts, outs)):
            if not isinstance(c, Tensor):
                raise RuntimeError(f"vjp_fn: cotangent {i} must be a Tensor, got {type(c)}")
            if tuple(c.shape) != tuple(o.shape):
                raise RuntimeError(f"Mismatch in shape: grad_output[{i}] has a shape of {tuple(c.shape)} and "
                                   f"output[{i}] has a shape of {tuple(o.shape)}.")
        graph = keep or _depth() > 0 or _any_requires_grad(cts) if create_graph is None else create_graph
        with enable_grad():
            gs = _vjp(outs, flat, cts, graph)
        result, k = [], 0
        for leaves, spec in diff:
            result.append(_detach(tree_unflatten(gs[k:k + len(leaves)], spec), graph))
            k += len(leaves)
        return tuple(result)

    out = _detach(out, keep)
    if has_aux:
        return out, vjp_fn, _detach(aux, keep)
    return out, vjp_fn


def _check_tangents(primals, tangents, who: str):
    if not isinstance(primals, tuple):
        raise RuntimeError(f"{who}: Expected primals to be a tuple. E.g. it should be valid to call f(*primals).")
    if not isinstance(tangents, tuple):
        raise RuntimeError(f"{who}: Expected tangents to be a tuple. E.g. it should be valid to call "
                           "f(*primals).")
    p_leaves, p_spec = tree_flatten(primals)
    t_leaves, t_spec = tree_flatten(tangents)
    if p_spec != t_spec:
        raise RuntimeError(f"{who}: Expected primals and tangents to have the same python structure. For example, "
                           "if primals is a tuple of 3 tensors, tangents also must be. Got primals with structure "
                           f"{p_spec} and tangents with structure {t_spec}")
    for p, t in zip(p_leaves, t_leaves):
        if not isinstance(t, Tensor):
            raise ValueError(f"Thing passed to transform API must be Tensor, got {type(t)}")
        if isinstance(p, Tensor) and tuple(p.shape) != tuple(t.shape):
            raise RuntimeError("Trying to set a forward gradient that has a different size than that of the "
                               f"original Tensor, this is not supported. Tensor is of size {list(p.shape)} while "
                               f"the given forward gradient is of size {list(t.shape)}.")
    return t_leaves


class _Linear:
    """The double-vjp graph of ``func`` at ``primals``: ``g(u) = J^T u`` with dummy cotangents ``u``, built
    once; ``apply(v)`` is ``J v`` (the vjp of g with v)."""

    def __init__(self, func, primals, has_aux: bool, who: str):
        with enable_grad():
            args, diff, live = _wrap_args(primals, range(len(primals)))
            self.keep = _depth() > 0 or live
            with _level():
                out = func(*args)
            self.out, self.aux = _split_aux(out, has_aux, who)
            self.outs, self.spec = _tensor_leaves(self.out, who)
            self.flat = [t for leaves, _ in diff for t in leaves]
            self.us = [_zero_leaf(o) if o.is_floating_point() else None for o in self.outs]
            if any(is_batched(o) for o in self.outs):
                # inside a batched vmap an unbatched output depends on no input (every alias is batched): its
                # jvp is zero, and its dummy cotangent is left out of the batched passes
                self.us = [u if is_batched(u) else None for u in self.us]
            live = [(o, u) for o, u in zip(self.outs, self.us) if u is not None]
            self.gs = _vjp([o for o, _ in live], self.flat, [u for _, u in live], True)

    def apply(self, tangents, keep: bool):
        """``J v`` for the tangents ``v``: the vjp of ``u -> J^T u`` with them. Inside a batched vmap the tangents
        may be batched though the graph is not (linearize's jvp_fn made outside): see _batched_grad."""
        us = [u for u in self.us if u is not None]
        it = iter(_grad(self.gs, us, list(tangents), keep))
        res = [(next(it) if u is not None else None) for u in self.us]
        res = [r if r is not None else _zeros_like(o) for r, o in zip(res, self.outs)]
        return _detach(tree_unflatten(res, self.spec), keep)


def jvp(func, primals, tangents, *, strict: bool = False, has_aux: bool = False):
    """(``func(*primals)``, the Jacobian-vector product with ``tangents``[, aux]), as torch.func.jvp (computed
    by the double-vjp trick: forgegrad has no forward-mode AD)."""
    who = "jvp(f, primals, tangents)"
    if strict:
        raise RuntimeError(f"{who}: strict=True is not implemented.")
    t_leaves = _check_tangents(primals, tangents, who)
    lin = _Linear(func, primals, has_aux, who)
    keep = lin.keep or _any_requires_grad(t_leaves)
    with enable_grad():
        jv = lin.apply(t_leaves, keep)
    out = _detach(lin.out, keep)
    return (out, jv, _detach(lin.aux, keep)) if has_aux else (out, jv)


def linearize(func, *primals):
    """(``func(*primals)``, jvp_fn): ``jvp_fn(*tangents)`` is the Jacobian-vector product at ``primals``, the
    graph built once and reused, as torch.func.linearize."""
    lin = _Linear(func, primals, False, "linearize")

    def jvp_fn(*tangents):
        t_leaves = _check_tangents(primals, tangents, "linearize")
        with enable_grad():
            return lin.apply(t_leaves, lin.keep or _any_requires_grad(t_leaves))

    return _detach(lin.out, lin.keep), jvp_fn


def _rows_at_once(o: Tensor, flat, seeds: Tensor, keep: bool, chunk):
    """The Jacobian rows of ``o`` (one per seed row) in one backward pass per ``chunk`` rows, the one-hot seeds
    as one batch (torch's jacrev: vmap over vjp_fn; see _plain_graph_pass): a list with a (rows, *input shape)
    tensor (or None: unreached) per input of ``flat`` (BatchedTensors inside a batched vmap); None where that pass
    cannot run (an op without a batching rule or a differentiable backward, a batched vmap in another thread)."""
    from ..factories import cat
    from . import _vmap
    from ._batched import active_elsewhere, batching, inner_level
    outer = batch_size()
    if o.is_complex() or (outer is None and active_elsewhere()):
        return None
    if outer is not None:
        # inside a batched vmap the graph is one of physical tensors (batch at dim 0): the rows are a level of
        # their own over it, seeds (rows, B, *o.shape), gradients (rows, B, *input) moved to (B, rows, *input)
        if not (is_batched(o) and all(is_batched(t) for t in flat)):
            return None
        o, flat = o._phys, [t._phys for t in flat]
        seeds = seeds.reshape((seeds.shape[0], 1) + tuple(o.shape[1:])).expand((seeds.shape[0],) + tuple(o.shape))
    n = seeds.shape[0]
    step = n if chunk is None else min(chunk, n)
    parts = []
    try:
        for s in range(0, n, step):
            m = min(step, n - s)
            with (batching(m) if outer is None else inner_level(m)):
                found = _grad([o], flat, [wrap(seeds[s:s + m].reshape((m,) + tuple(o.shape)))], keep)
                parts.append([None if g is None else g._phys if is_batched(g) else phys(g, m) for g in found])
    except NeedLoop as e:
        _vmap.stats["why"] = str(e)
        return None
    _vmap.stats["jacobian_batched"] += 1
    rows = parts[0] if len(parts) == 1 else [None if p[0] is None else cat(list(p), 0) for p in zip(*parts)]
    if outer is not None:
        rows = [None if g is None else wrap(g.movedim(0, 1)) for g in rows]
    return rows


def _jacobian(func, argnums, has_aux: bool, who: str, args, kwargs, chunk_size=None):
    from ..factories import eye
    from . import _vmap
    with enable_grad():
        single, diff, keep, out, aux = _call_on_wrapped(func, argnums, has_aux, who, args, kwargs)
        outs, out_spec = _tensor_leaves(out, "vjp(f, *primals)")
        flat = [t for leaves, _ in diff for t in leaves]
        per_out = []
        for o in outs:
            n = o.numel()
            jacs = None
            rows = [[] for _ in flat]
            if n and o.requires_grad:
                seeds = eye(n, dtype=o.dtype, device=o.device)
                at_once = _rows_at_once(o, flat, seeds, keep, chunk_size)
                if at_once is not None:
                    jacs = [_stack_rows([], o, t) if g is None else g.reshape(tuple(o.shape) + tuple(t.shape))
                            for g, t in zip(at_once, flat)]
                else:  # one backward pass per row (inside a batched vmap each pass is batched over its batch)
                    _vmap.stats["jacobian_rows"] += 1
                    for k in range(n):
                        for i, g in enumerate(_vjp([o], flat, [seeds[k].reshape(o.shape)], keep)):
                            rows[i].append(g)
            if jacs is None:
                jacs = [_stack_rows(r, o, t) for r, t in zip(rows, flat)]
            per_arg, k = [], 0
            for leaves, spec in diff:
                per_arg.append(tree_unflatten(jacs[k:k + len(leaves)], spec))
                k += len(leaves)
            per_out.append(per_arg[0] if single else tuple(per_arg))
    jac = _detach(tree_unflatten(per_out, out_spec), keep)
    return (jac, _detach(aux, keep)) if has_aux else jac


def _stack_rows(rows, out: Tensor, inp: Tensor) -> Tensor:
    from ..factories import stack, zeros
    shape = tuple(out.shape) + tuple(inp.shape)
    if not rows:
        return zeros(shape, dtype=inp.dtype, device=inp.device)
    return stack(rows, 0).reshape(shape)


def jacrev(func, argnums=0, *, has_aux: bool = False, chunk_size=None, _preallocate_and_copy: bool = False):
    """The Jacobian of ``func`` with respect to its ``argnums`` arguments by reverse mode, as torch.func.jacrev:
    the output pytree with each tensor replaced by its Jacobians (shape ``output.shape + input.shape``),
    structured as the argnums arguments. The rows of each output's Jacobian in one batched backward pass
    (``chunk_size`` rows per pass; one pass per row where that cannot run, see _rows_at_once)."""
    if chunk_size is not None and (isinstance(chunk_size, bool) or not isinstance(chunk_size, int)
                                   or chunk_size <= 0):
        raise ValueError("jacrev: `chunk_size` should be greater than 0.")

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        return _jacobian(func, argnums, has_aux, "jacrev(f)", args, kwargs, chunk_size)

    return wrapper


def jacfwd(func, argnums=0, has_aux: bool = False, *, randomness: str = "error"):
    """torch.func.jacfwd's Jacobian (same structure as jacrev's). forgegrad has no forward-mode AD: it is
    computed by reverse mode, as jacrev's. ``randomness``: as vmap's ("error" raises if
    ``func`` draws random numbers)."""
    from ._vmap import _check_randomness, _random_guard
    _check_randomness(randomness)

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        with _random_guard(randomness):
            return _jacobian(func, argnums, has_aux, "jacfwd(f)", args, kwargs)

    return wrapper


def hessian(func, argnums=0):
    """The Hessian of a scalar ``func`` with respect to its ``argnums`` arguments: ``jacfwd(jacrev(func,
    argnums), argnums)``, as torch.func.hessian."""
    return jacfwd(jacrev(func, argnums), argnums)
