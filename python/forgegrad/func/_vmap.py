"""vmap with torch.func.vmap's arguments, checks and results. It first tries one batched call: ``func`` runs
once on BatchedTensors (_batched.py: each looks like one element, the whole batch sits at physical dim 0) and
every op on them goes to its batching rule (_batch_rules.py), so a vmapped function costs about one call at
batch size B. Where a rule is missing or only the loop is safe (.item(), advanced indexing, in-place writes into
the inputs or of batched values into unbatched tensors, random draws under "different" other than dropout's, a
vmap inside the body: the outer one loops, the inner one batches), the whole call is rerun as the loop: ``func``
once per batch element on the inputs' slices (``select(in_dim, b)``, autograd kept) and the outputs stacked at
``out_dims`` (torch's fallback). Either way the results are the same; ``stats`` counts the calls each path took.
chunk_size runs the batched call per chunk.

Side effects: a call that loops has run ``func``'s body once more, in the batched attempt, up to the point where
it needed the loop: Python side effects there (appending to a list, a captured tensor written in place with
unbatched values) happen once more than in the loop alone; the inputs and the random generator are left as they
were (a write into an input, or of a batched value into an unbatched tensor, loops before writing). vmap then
remembers that call if its loop returned (the function object, its inputs' shapes, dtypes and in_dims, out_dims,
randomness, chunk_size, a module's training flag): a later call with the same goes straight to the loop, running
the body once per element only.

Randomness: forgegrad's random ops draw from one global generator (forgegrad.random); "error" raises if ``func``
advanced or reseeded it, "same" rewinds it before each element (every element sees the same draws), "different"
lets each element draw its own. In the batched call dropout draws for the whole batch at once ("different": each
element its own mask, drawn in another order than the loop's; "same": one element's mask for all, as the loop);
any other draw under "different" rewinds the generator and reruns the call as the loop. A numpy Generator
passed to an op explicitly is not watched (in a batched call it makes the call loop).
"""
from __future__ import annotations

import contextlib
import functools
import weakref

from .. import random as _random
from ..tensor import Tensor
from . import _batched
from ._pytree import broadcast_prefix, tree_flatten, tree_unflatten

__all__ = ["vmap"]

_RANDOMNESS = ("error", "different", "same")


def _check_randomness(randomness) -> None:
    if randomness not in _RANDOMNESS:
        raise RuntimeError(f"Only allowed values for randomness are 'error', 'different', or 'same'. Got "
                           f"{randomness}")


def _snapshot():
    gen = _random.generator()
    return gen, gen.bit_generator.state


@contextlib.contextmanager
def _random_guard(randomness: str):
    """randomness="error": raise if the body drew from (or reseeded) the global generator."""
    if randomness != "error":
        yield
        return
    gen, state = _snapshot()
    yield
    now = _random.generator()
    if now is not gen or now.bit_generator.state != state:
        raise RuntimeError("vmap: called random operation while in randomness error mode. Please either use the "
                           "'same' or 'different' randomness flags on vmap or perform the randomness operation out "
                           "of vmap")


def _name(func) -> str:
    return getattr(func, "__name__", type(func).__name__)


def _in_dims_leaves(func, in_dims, args):
    leaves, spec = tree_flatten(args)
    where = f"vmap({_name(func)}, in_dims={in_dims}, ...)(<inputs>)"
    if not (isinstance(in_dims, (int, tuple)) and not isinstance(in_dims, bool)):
        raise ValueError(f"{where}: expected `in_dims` to be int or a (potentially nested) tuple matching the "
                         f"structure of inputs, got: {type(in_dims)}.")
    if isinstance(in_dims, tuple) and len(in_dims) != len(args):
        dims_spec = tree_flatten(in_dims)[1]
        raise ValueError(f"{where}: in_dims is not compatible with the structure of `inputs`. in_dims has structure "
                         f"{dims_spec} but inputs has structure {spec}.")
    dims = broadcast_prefix(in_dims, spec, is_leaf=lambda x: x is None or isinstance(x, int))
    if dims is None:
        raise ValueError(f"{where}: in_dims is not compatible with the structure of `inputs`. in_dims has structure "
                         f"{tree_flatten(in_dims)[1]} but inputs has structure {spec}.")
    size = None
    sizes = []
    norm = []
    for x, d in zip(leaves, dims):
        if d is None:
            norm.append(None)
            continue
        if isinstance(d, bool) or not isinstance(d, int):
            raise ValueError(f"{where}: in_dims must be int or None for each input, got {type(d)}")
        if not isinstance(x, Tensor):
            raise ValueError(f"{where}: Got in_dim={d} for an input but the input is of type {type(x)}. We cannot "
                             "vmap over non-Tensor arguments, please use None as the respective in_dim")
        n = x.dim()
        if not -n <= d < n:
            raise ValueError(f"{where}: Got in_dim={d} for some input, but that input is a Tensor of dimensionality "
                             f"{n} so expected in_dim to satisfy -{n} <= in_dim < {n}.")
        d = d + n if d < 0 else d
        norm.append(d)
        sizes.append(x.shape[d])
        size = x.shape[d] if size is None else size
    if not sizes:
        raise ValueError(f"{where}: at least one input must be batched: every input's in_dim is None or it is not "
                         "a Tensor")
    if any(s != size for s in sizes):
        raise ValueError("vmap: Expected all tensors to have the same size in the mapped dimension, got sizes "
                         f"{sizes} for the mapped dimension")
    return leaves, spec, norm, size


def _flat_out_dims(func, out_dims, out_spec):
    dims = broadcast_prefix(out_dims, out_spec, is_leaf=lambda x: x is None or isinstance(x, int))
    if dims is None:
        raise ValueError(f"vmap({_name(func)}, ..., out_dims={out_dims})(<inputs>): out_dims is not compatible with "
                         f"the structure of `outputs`. out_dims has structure {tree_flatten(out_dims)[1]} but "
                         f"outputs has structure {out_spec}.")
    return dims


def _stack(func, per_elem, dims, batch):
    from ..factories import stack
    out = []
    for j, d in enumerate(dims):
        column = [leaves[j] for leaves in per_elem]
        first = column[0]
        if d is None:
            # out_dim None: only an output that does not vary over the batch (a non-tensor, or the same tensor
            # object from every call, such as a captured one) can be returned unbatched
            if isinstance(first, Tensor) and not all(c is first for c in column):
                raise ValueError(f"vmap({_name(func)}, ...): `{_name(func)}` can not return a BatchedTensor when "
                                 "out_dim is None")
            out.append(first)
            continue
        if isinstance(d, bool) or not isinstance(d, int):
            raise ValueError(f"vmap({_name(func)}, ..., out_dims={d}): out_dims must be int or None for each "
                             f"output, got {type(d)}")
        if not isinstance(first, Tensor):
            raise ValueError(f"vmap({_name(func)}, ...): `{_name(func)}` must only return Tensors, got type "
                             f"{type(first)}. Did you mean to set out_dims= to None for output?")
        n = first.dim() + 1
        if not -n <= d < n:
            raise IndexError(f"Dimension out of range (expected to be in range of [{-n}, {n - 1}], but got {d})")
        for c in column:
            if not isinstance(c, Tensor):
                raise ValueError(f"vmap({_name(func)}, ...): `{_name(func)}` must only return Tensors, got type "
                                 f"{type(c)}. Did you mean to set out_dims= to None for output?")
            if tuple(c.shape) != tuple(first.shape):
                raise RuntimeError(f"vmap({_name(func)}, ...): output {j} has shape {tuple(first.shape)} for batch "
                                   f"element 0 but {tuple(c.shape)} for another; every element must give the same "
                                   "shape")
        out.append(stack(column, d))
    return out


_LOOP = object()
# calls each path took, and why the last loop was needed (the tests read it)
# (and jacrev/jacfwd: Jacobians whose rows took one batched backward pass, or one pass per row)
stats = {"batched": 0, "loop": 0, "why": "", "jacobian_batched": 0, "jacobian_rows": 0}


def _narrow(x, d: int, s: int, n: int):
    return x[(slice(None),) * d + (slice(s, s + n),)]


def _batched_body(func, leaves, spec, dims, batch, kwargs, randomness):
    """``func`` called once on BatchedTensors: its flattened outputs and their structure."""
    inputs = [x if d is None else _batched.wrap(x if d == 0 else x.movedim(d, 0)) for x, d in zip(leaves, dims)]
    with _batched.batching(batch, [x._data for x in leaves if isinstance(x, Tensor)], randomness):
        with _random_guard(randomness):
            out = func(*tree_unflatten(inputs, spec), **kwargs)
        if _batched.tripped():
            raise _batched.NeedLoop("the function caught a NeedLoop")
    return tree_flatten(out)


def _place(flat, flat_dims, batch):
    """Each output with its batch at its out_dim; NeedLoop where the loop's checks would raise."""
    out = []
    for t, d in zip(flat, flat_dims):
        batched = _batched.is_batched(t)
        if d is None:
            if batched:
                raise _batched.NeedLoop("a batched output with out_dim None")
            out.append(t)
            continue
        if isinstance(d, bool) or not isinstance(d, int) or not isinstance(t, Tensor):
            raise _batched.NeedLoop("out_dims")
        n = t.dim() + 1
        if not -n <= d < n:
            raise _batched.NeedLoop("out_dims")
        d = d + n if d < 0 else d
        if batched:
            p = t._phys
            out.append(p if d == 0 else p.movedim(0, d))
        else:  # the same for every element: expanded, as torch's
            shape = tuple(t.shape)
            out.append(t.unsqueeze(d).expand(shape[:d] + (batch,) + shape[d:]))
    return out


# function -> the call keys (see _call_key) whose batched attempt looped and whose loop then returned: a later
# call with the same key goes straight to the loop, so that the body's Python side effects do not happen once
# more in a doomed attempt (a call whose loop raised is not noted: the next one tries the batched call again)
_looped = weakref.WeakKeyDictionary()


def _call_key(func, leaves, spec, dims, kwargs, out_dims, randomness, chunk_size):
    """What a function's path depends on besides its captured state: the inputs' shapes, dtypes and in_dims, the
    structures, the unmapped non-tensor arguments, a module's training flag (None where one cannot be a dict key:
    no memo)."""
    try:
        key = (spec, tuple((tuple(x.shape), x.dtype, d) if isinstance(x, Tensor) else (type(x), x)
                           for x, d in zip(leaves, dims)),
               tuple(sorted((k, v) for k, v in kwargs.items() if not isinstance(v, Tensor))), out_dims, randomness,
               chunk_size, getattr(func, "training", None))
        hash(key)
    except TypeError:
        return None
    return key


def _known_to_loop(func, key) -> bool:
    try:
        return key is not None and key in _looped.get(func, ())
    except TypeError:  # not weakly referenceable
        return False


def _note_loop(func, key) -> None:
    if key is None:
        return
    try:
        _looped.setdefault(func, set()).add(key)
    except TypeError:
        pass


def _try_batched(func, leaves, spec, dims, batch, kwargs, out_dims, randomness, chunk_size, key=None):
    """One batched call of ``func`` per chunk (see _batched.py), or _LOOP where it met a case only the loop
    handles (the random generator is then rewound, so that the loop draws as if it ran alone) or where the same
    call looped before (see _looped)."""
    from ..factories import cat
    if _known_to_loop(func, key):
        stats["why"] = "looped before"
        return _LOOP
    gen, state = _snapshot()
    step = batch if chunk_size is None else min(chunk_size, batch)
    _batched.sanctioned_state((gen, state))
    try:
        parts, out_spec, flat_dims = [], None, None
        for s in range(0, batch, step):
            n = min(step, batch - s)
            chunk = leaves if n == batch else [x if d is None else _narrow(x, d, s, n) for x, d in zip(leaves, dims)]
            if randomness == "same":
                gen.bit_generator.state = state
            flat, sp = _batched_body(func, chunk, spec, dims, n, kwargs, randomness)
            if out_spec is None:
                out_spec = sp
                flat_dims = _flat_out_dims(func, out_dims, out_spec)
            elif sp != out_spec:
                raise _batched.NeedLoop("output structure")
            parts.append(_place(flat, flat_dims, n))
        if randomness == "different":
            now = _random.generator()
            want = _batched.sanctioned_state(None)
            if now is not want[0] or now.bit_generator.state != want[1]:
                # each element must draw its own: only a rule's draw for the whole batch (dropout) does that
                raise _batched.NeedLoop("random draws")
    except _batched.NeedLoop as e:
        stats["why"] = str(e)
        _random._gen = gen
        gen.bit_generator.state = state
        return _LOOP
    if len(parts) == 1:
        return tree_unflatten(parts[0], out_spec)
    out = [parts[0][j] if d is None else cat([p[j] for p in parts], d % (parts[0][j].dim()))
           for j, d in enumerate(flat_dims)]
    return tree_unflatten(out, out_spec)


def vmap(func, in_dims=0, out_dims=0, randomness: str = "error", *, chunk_size=None):
    """``func`` mapped over a dimension of its inputs, as torch.func.vmap: ``in_dims`` (an int, or a tuple
    matching the positional arguments, nested for pytrees, None for an unmapped argument) says which dimension
    of each input is the batch; ``out_dims`` where each output's batch dimension goes. Keyword arguments are
    passed unmapped. One batched call where the batching rules cover ``func``, else once per batch element
    (see the module's notes); ``chunk_size``: elements per batched call."""
    _check_randomness(randomness)
    if chunk_size is not None and (isinstance(chunk_size, bool) or not isinstance(chunk_size, int)
                                   or chunk_size <= 0):
        raise ValueError(f"vmap: chunk_size should be None or greater than 0. (got {chunk_size})")
    if not callable(func):
        raise TypeError(f"vmap: func must be callable, got {type(func).__name__}")

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        if not args:
            raise ValueError(f"vmap({_name(func)})(<inputs>): got no inputs. Maybe you forgot to add inputs, or you "
                             "are trying to vmap over a function with no inputs. The latter is unsupported.")
        leaves, spec, dims, batch = _in_dims_leaves(func, in_dims, args)
        if _batched.batch_size() is not None:
            raise _batched.NeedLoop("vmap inside a batched vmap")  # the outer loops, this one batches
        key = None
        if batch > 0 and not _batched.active_elsewhere():
            key = _call_key(func, leaves, spec, dims, kwargs, out_dims, randomness, chunk_size)
            out = _try_batched(func, leaves, spec, dims, batch, kwargs, out_dims, randomness, chunk_size, key)
            if out is not _LOOP:
                stats["batched"] += 1
                return out
        stats["loop"] += 1
        if batch == 0:
            raise ValueError(f"vmap({_name(func)}, ...): the mapped dimension has size 0; forgegrad's vmap runs "
                             "func once per element and cannot infer the output of an empty batch")
        per_elem, out_spec = [], None
        start = _snapshot() if randomness == "same" else None
        for b in range(batch):
            sliced = [x if d is None else x.select(d, b) for x, d in zip(leaves, dims)]
            if start is not None:
                start[0].bit_generator.state = start[1]
            with _random_guard(randomness), _batched.loop_level(id(x) for x, d in zip(sliced, dims)
                                                                 if d is not None):
                out = func(*tree_unflatten(sliced, spec), **kwargs)
            flat, s = tree_flatten(out)
            if out_spec is None:
                out_spec = s
            elif s != out_spec:
                raise RuntimeError(f"vmap({_name(func)}, ...): the output's structure differs between batch "
                                   f"elements ({out_spec} and {s})")
            per_elem.append(flat)
        flat_dims = _flat_out_dims(func, out_dims, out_spec)
        out = tree_unflatten(_stack(func, per_elem, flat_dims, batch), out_spec)
        _note_loop(func, key)
        return out

    return wrapper
