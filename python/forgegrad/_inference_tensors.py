"""Inference tensors (torch's): tensors made inside ``inference_mode()`` and the views of them.

torch ties the kind to the storage: a tensor whose storage was allocated in inference mode is an inference tensor,
and so is every view of it (made in the mode or after it); a view made in the mode of a normal tensor is normal.
Outside the mode torch refuses, with the RuntimeErrors below, an in-place write into one, ``requires_grad_()`` on
one, and an op recorded by autograd that saves one for its backward (``w * a`` with ``w`` requiring grad saves
``a``; ``w + a`` saves nothing and runs). Ops on them outside the mode make normal tensors (``clone()``).

forgegrad's inference tensors are instances of :class:`InferenceTensor`, a Tensor subclass that adds no field:
``Tensor._wrap`` (every op's output) and the constructor make one while their thread is in the mode, and a view
op (``Function.is_view``), ``detach()`` and ``.data`` give their result the kind of the tensor they view when it
shares that tensor's storage. So ``t._is_inference`` is a class attribute read, and nothing is stored per tensor.

Cost: while no thread has an inference_mode block open, making a tensor tests one module global (grad_mode's
``_inference_threads``); until a block has been opened once (``_inference_seen``), no op checks anything else.

``t.requires_grad = True`` is checked by a property on the inference classes (InferenceTensor, nn.parameter's
InferenceParameter) alone: a plain Tensor's ``requires_grad`` stays a slot. An nn.Parameter takes torch's kind (of
an inference tensor, or of new data made in the mode: an inference parameter). A view of an inference tensor made
outside the mode records no node (torch's has no grad_fn). Inside the mode ``enable_grad()`` turns the reported grad
mode on (grad_mode.is_grad_enabled) and records nothing.

``detach()`` / ``.data`` of an inference tensor taken outside the mode is a DetachedInferenceTensor: an inference
tensor (``is_inference()``) that takes in-place writes, as torch lets them through (taken inside the mode, or a
view of one, refuses as torch's). Not covered: torch writes the values of a refused in-place op before it raises;
forgegrad raises first.
"""
from __future__ import annotations

from . import grad_mode
from . import _version_counter as _vc
from .tensor import Tensor

__all__ = ["InferenceTensor", "DetachedInferenceTensor", "detached_kind", "REQUIRES_GRAD_PROPERTY", "in_mode",
           "check_inplace", "check_requires_grad", "view_kind", "outputs_made"]

# torch's messages (c10/core/TensorImpl, torch/csrc/autograd), word for word: code that ports matches on them
INPLACE_MESSAGE = ("Inplace update to inference tensor outside InferenceMode is not allowed.You can make a clone to "
                   "get a normal tensor before doing inplace update.See https://github.com/pytorch/rfcs/pull/17 for "
                   "more details.")
SAVED_MESSAGE = ("Inference tensors cannot be saved for backward. Please do not use Tensors created in inference mode "
                 "in computation tracked by autograd. To work around this, you can make a clone to get a normal "
                 "tensor and use it in autograd, or use `torch.no_grad()` instead of `torch.inference_mode()`.")
REQUIRES_GRAD_MESSAGE = "Setting requires_grad=True on inference tensor outside InferenceMode is not allowed."


_REQUIRES_GRAD_SLOT = Tensor.requires_grad  # the slot's descriptor, which the property below wraps


def _set_requires_grad(t, value) -> None:
    """``t.requires_grad = True`` on an inference tensor outside the mode: torch's RuntimeError, as
    requires_grad_() (only inference tensors pay for the check: a plain Tensor's attribute stays a slot)."""
    if value and not _in_mode():
        raise RuntimeError(REQUIRES_GRAD_MESSAGE)
    _REQUIRES_GRAD_SLOT.__set__(t, value)


# what InferenceTensor and nn.parameter.InferenceParameter have for ``requires_grad`` (read by the slot's own C
# getter: ops read it for every input)
REQUIRES_GRAD_PROPERTY = property(_REQUIRES_GRAD_SLOT.__get__, _set_requires_grad)


class InferenceTensor(Tensor):
    """A tensor made in inference mode (``is_inference()`` True). Same layout as Tensor: a tensor changes kind by
    ``__class__`` assignment. Pickled and deep-copied as a normal Tensor (torch's copies are normal tensors)."""

    __slots__ = ()
    _is_inference = True
    requires_grad = REQUIRES_GRAD_PROPERTY

    def __reduce_ex__(self, protocol):
        return _normal_tensor, (), self.__getstate__()


class DetachedInferenceTensor(InferenceTensor):
    """``detach()`` / ``.data`` of an inference tensor taken outside the mode: still an inference tensor, but an
    in-place write into it is let through, as torch lets it (its views are plain inference tensors again)."""

    __slots__ = ()
    _inference_writable = True



def detached_kind(t) -> None:
    """``t`` (just made by detach() / .data, its kind taken from its source) writable in place where torch lets it:
    an inference tensor detached outside the mode."""
    if type(t) is InferenceTensor and not _in_mode():
        t.__class__ = DetachedInferenceTensor


def _normal_tensor():
    """An empty plain Tensor that pickle or deepcopy then gives an inference tensor's state (its slots)."""
    return Tensor.__new__(Tensor)


_state = grad_mode._state


def _in_mode() -> bool:
    return _state.__dict__.get("inference", False)


in_mode = _in_mode


def class_in_mode(cls):
    """The class a new tensor of class ``cls`` gets: InferenceTensor for a plain Tensor made in inference mode."""
    return InferenceTensor if cls is Tensor and _in_mode() else cls


def view_kind(view, base) -> None:
    """``view`` (a plain Tensor or InferenceTensor) takes ``base``'s kind when it shares ``base``'s storage (torch's
    views: an inference tensor's are inference tensors, a normal tensor's are normal, in the mode or not)."""
    cls = type(view)
    if cls is not Tensor and cls is not InferenceTensor:
        return
    want = InferenceTensor if base._is_inference else Tensor
    if cls is not want and _vc.root(view._data) is _vc.root(base._data):
        view.__class__ = want


def check_inplace(t) -> None:
    """Refuse an in-place write into inference tensor ``t`` outside inference mode (torch's RuntimeError)."""
    if t._is_inference and not t._inference_writable and not _in_mode():
        raise RuntimeError(INPLACE_MESSAGE)


def check_requires_grad(t) -> None:
    if t._is_inference and not _in_mode():
        raise RuntimeError(REQUIRES_GRAD_MESSAGE)


def _inference_inputs(args, kwargs):
    """The inference tensors among an op's arguments, also inside a tuple or list (an index key, a list to cat)."""
    for a in (*args, *kwargs.values()):
        if isinstance(a, (tuple, list)):
            yield from (t for t in a if isinstance(t, Tensor) and t._is_inference)
        elif isinstance(a, Tensor) and a._is_inference:
            yield a


def outputs_made(cls, ctx, args, kwargs, results, record_graph: bool) -> bool:
    """Function.apply's step for a node once inference tensors may exist: a view op's output takes its input's
    kind, and a recorded node that saved an inference tensor's storage for backward outside the mode refuses
    (what forward passed to ``save_for_backward`` is what torch's op saves). Returns whether the node is still
    recorded: not for a view of an inference tensor (torch's has no grad_fn and does not require grad, also when
    the inference tensor does)."""
    if cls.is_view and args and results and isinstance(args[0], Tensor) and isinstance(results[0], Tensor):
        view_kind(results[0], args[0])
        base, view = args[0], results[0]
        if not view.requires_grad and not base._is_inference and _in_mode():
            # torch: a view made in the mode of a tensor that requires grad requires grad too (a leaf, no grad_fn),
            # so an in-place write into it outside the mode is refused; without the flag it silently wrote into
            # the base (a parameter, say) behind autograd's back. A view's base is the tensor its view chain
            # started from (torch's _base: a flag set later on an intermediate view does not count)
            root = getattr(base, "_view_of", None)
            if (base if root is None else root).requires_grad:
                view.requires_grad = True
        if record_graph and results[0]._is_inference:
            return False
    if record_graph and ctx.saved_at is not None and not _in_mode():
        saved = None
        for a in _inference_inputs(args, kwargs):
            if saved is None:
                saved = [_vc.root(s) for s in ctx.saved_tensors if s is not None and hasattr(s, "shape")]
            r = _vc.root(a._data)
            if any(s is r for s in saved):
                raise RuntimeError(SAVED_MESSAGE)
    return record_graph
