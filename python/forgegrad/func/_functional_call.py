"""functional_call (a module run with other tensors in place of its parameters and buffers) and
stack_module_state, as torch.func's (torch/_functorch/functional_call.py, torch/nn/utils/stateless.py)."""
from __future__ import annotations

import contextlib
from typing import Any, Dict, Sequence

from ..tensor import Tensor

__all__ = ["functional_call", "stack_module_state", "replace_all_batch_norm_modules_"]

_MISSING = object()


def _walk_tensors(module, prefix=""):
    """(name, tensor) of every parameter and buffer, a tied one under each of its names (torch's
    remove_duplicate=False)."""
    seen_modules = set()

    def walk(m, pre):
        if id(m) in seen_modules:  # a cycle; a module shared by two parents is still visited under each path
            return
        seen_modules.add(id(m))
        for store in (m._parameters, m._buffers):
            for k, v in store.items():
                if v is not None:
                    yield pre + k, v
        for k, child in m._modules.items():
            if child is not None:
                yield from walk(child, pre + k + ".")
        seen_modules.discard(id(m))

    yield from walk(module, prefix)


def _submodule(module, path: str):
    m = module
    for part in path.split(".") if path else []:
        child = m._modules.get(part) if hasattr(m, "_modules") else None
        if child is None:
            raise AttributeError(f"{type(m).__name__} has no attribute `{part}`")
        m = child
    return m


def _swap(module, name: str, value):
    """Put ``value`` (or remove the attribute, for _MISSING) at ``name``; returns what was there."""
    prefix, _, attr = name.rpartition(".")
    m = _submodule(module, prefix)
    if value is not _MISSING and value is not None and not isinstance(value, Tensor):
        raise TypeError(f"functional_call: the value for {name!r} must be a forgegrad Tensor, got "
                        f"{type(value).__name__}")
    for store in (m._parameters, m._buffers):
        if attr in store:
            orig = store[attr]
            if value is _MISSING:
                del store[attr]
                m.__dict__.pop(attr, None)
            else:  # the registry and its __dict__ mirror (nn.Module._register), bypassing Parameter's type check
                store[attr] = value
                m.__dict__[attr] = value
            return orig
    if attr in m.__dict__ or hasattr(type(m), attr):
        orig = getattr(m, attr)
        if orig is not None and not isinstance(orig, Tensor):
            raise TypeError(f"attribute `{attr}`: {orig!r} is not an instance of Tensor")
    else:
        orig = _MISSING
    if value is not _MISSING:
        object.__setattr__(m, attr, value)
    elif attr in m.__dict__:
        del m.__dict__[attr]
    return orig


def _untie(module, given: Dict[str, Any]) -> Dict[str, Any]:
    """Add the other names of a tied tensor given under one name (torch's _untie_named_tensors_map)."""
    by_tensor: Dict[int, set] = {}
    for name, t in _walk_tensors(module):
        by_tensor.setdefault(id(t), set()).add(name)
    tied = {n: names for names in by_tensor.values() if len(names) > 1 for n in names}
    given_tied = [n for n in given if n in tied]
    for n in given_tied:
        names = tied[n]
        if len(names.intersection(given_tied)) > 1 and len({id(given[k]) for k in names if k in given}) != 1:
            raise ValueError(f"functional_call got multiple values for keys {sorted(names)}, which are tied. "
                             "Consider using tie_weights=False")
    out = dict(given)
    for n in given_tied:
        for k in tied[n]:
            out[k] = given[n]
    return out


@contextlib.contextmanager
def _reparametrize(module, given: Dict[str, Any], tie_weights: bool, strict: bool):
    tensors = _untie(module, given) if tie_weights else given
    if strict:
        valid = {n for n, _ in _walk_tensors(module)}
        missing, unexpected = sorted(valid - set(tensors)), sorted(set(tensors) - valid)
        msgs = []
        if unexpected:
            msgs.append(f"Unexpected key(s): {', '.join(map(repr, unexpected))}.")
        if missing:
            msgs.append(f"Missing key(s): {', '.join(map(repr, missing))}.")
        if msgs:
            raise RuntimeError("Error(s) in reparametrizing for {}:\n\t{}".format(type(module).__name__,
                                                                                 "\n\t".join(msgs)))
    originals: Dict[str, Any] = {}
    try:
        for name, value in tensors.items():
            originals[name] = _swap(module, name, value)
        yield
    finally:
        current = {name: _swap(module, name, orig) for name, orig in reversed(list(originals.items()))}
        # a module that reassigned a buffer in forward (running statistics): the new one goes back to the
        # caller's dict, as torch's
        given.update({k: current[k] for k in given if k in current and current[k] is not _MISSING})


def functional_call(module, parameter_and_buffer_dicts, args=None, kwargs=None, *, tie_weights: bool = True,
                    strict: bool = False):
    """``module(*args, **kwargs)`` with the tensors of ``parameter_and_buffer_dicts`` (a dict, or a sequence of
    dicts with disjoint keys, of dotted names such as ``"0.weight"``) standing in for the module's parameters and
    buffers; the module's own are put back afterwards, also when the call raises. Gradients flow to the given
    tensors. ``tie_weights``: a value given for one name of a tied parameter is used for all its names.
    ``strict``: every parameter and buffer must be given, and nothing else."""
    from ..nn.module import Module
    if isinstance(parameter_and_buffer_dicts, dict):
        tensors = parameter_and_buffer_dicts
    elif isinstance(parameter_and_buffer_dicts, Sequence) and not isinstance(parameter_and_buffer_dicts, str):
        if not all(isinstance(d, dict) for d in parameter_and_buffer_dicts):
            raise ValueError("Expected all elements of parameter_and_buffer_dicts to be dictionaries")
        counts: Dict[str, int] = {}
        for d in parameter_and_buffer_dicts:
            for k in d:
                counts[k] = counts.get(k, 0) + 1
        repeated = [k for k, n in counts.items() if n > 1]
        if repeated:
            raise ValueError(f"{repeated} appeared in multiple dictionaries; behavior of functional call is "
                             "ambiguous")
        tensors = {k: v for d in parameter_and_buffer_dicts for k, v in d.items()}
    else:
        raise ValueError("Expected parameter_and_buffer_dicts to be a dict, or a list/tuple of dicts, but got "
                         f"{type(parameter_and_buffer_dicts)}")
    if not isinstance(module, Module):
        raise TypeError(f"functional_call: module must be a forgegrad.nn.Module, got {type(module).__name__}")
    if kwargs is None:
        kwargs = {}
    if args is None:
        args = ()
    elif not isinstance(args, tuple):
        args = (args,)
    with _reparametrize(module, tensors, tie_weights, strict):
        return module(*args, **kwargs)


def stack_module_state(models) -> tuple:
    """(params, buffers): for each parameter and buffer name of the (same-class) ``models``, their tensors stacked
    along a new leading dimension; stacked parameters are fresh leaves requiring grad when the models' do. For
    model ensembling with ``vmap(functional_call)``."""
    from ..factories import stack
    models = list(models)
    if len(models) == 0:
        raise RuntimeError("stack_module_state: Expected at least one model, got 0.")
    if not (all(m.training for m in models) or all(not m.training for m in models)):
        raise RuntimeError("stack_module_state: Expected all models to have the same training/eval mode.")
    if not all(type(m) is type(models[0]) for m in models):
        raise RuntimeError("stack_module_state: Expected all models to be of the same class.")

    def stacked(tensors, name):
        req = [t.requires_grad for t in tensors]
        if any(req) and not all(req):
            raise RuntimeError(f"Expected {name} from each model to have the same .requires_grad")
        result = stack([t.detach() for t in tensors])
        return result.requires_grad_(True) if all(req) else result

    all_params = [dict(m.named_parameters()) for m in models]
    all_buffers = [dict(m.named_buffers()) for m in models]
    params = {k: stacked([p[k] for p in all_params], k) for k in all_params[0]}
    buffers = {k: stacked([b[k] for b in all_buffers], k) for k in all_buffers[0]}
    return params, buffers


def replace_all_batch_norm_modules_(root):
    """In place: every BatchNorm module in ``root`` (itself included) stops tracking running statistics
    (``running_mean``, ``running_var``, ``num_batches_tracked`` None, ``track_running_stats=False``), so that it
    normalizes with each batch's statistics in training and eval mode alike and runs under vmap, where updating
    unbatched running statistics raises, as torch.func.replace_all_batch_norm_modules_. Returns ``root``."""
    from ..nn.module import Module
    from ..nn.normalization import _BatchNorm
    if not isinstance(root, Module):
        raise TypeError(f"replace_all_batch_norm_modules_: root must be an nn.Module, got {type(root).__name__}")
    for module in root.modules():
        if isinstance(module, _BatchNorm) and module.track_running_stats:
            module.running_mean = None
            module.running_var = None
            module.num_batches_tracked = None
            module.track_running_stats = False
    return root
