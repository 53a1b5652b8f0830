"""The batched value vmap's function sees (functorch's BatchedTensor, one level) and the hook through which
Function.apply hands ops on such values to the batching rules (_batch_rules.py).

A :class:`BatchedTensor` stands for one batch element (the *logical* tensor): ``shape``, ``dim()``,
``size()``, ``dtype`` answer for it, while ``_phys`` holds the whole batch with the batch at dim 0. An op on
logical tensors becomes one call of the real op on the physical ones (its rule). Everything that would read
the batch's storage directly (``_data``, the autograd engine's ``_ctx``/``grad``, ``.item()``, numpy
conversion, an op without a rule) raises :class:`NeedLoop`, a BaseException (so that the body's own
``except Exception`` does not swallow it): vmap then reruns the whole call as its loop, so an unhandled case
costs time, never a wrong result.

One batched level at a time, per thread: a vmap called inside a batched body makes the outer one loop (the
inner one is then batched); a vmap in another thread meanwhile runs as a loop.
"""
from __future__ import annotations

import threading

import numpy as np

from .. import autograd as _autograd
from ..grad_mode import _state as _grad_state
from ..tensor import Tensor

__all__ = ["BatchedTensor", "NeedLoop", "batch_size", "wrap", "phys", "is_batched", "batching"]


class NeedLoop(BaseException):
    """Raised inside a batched vmap body where only the loop is safe (caught by vmap). Making one also marks
    the running level (``tripped``): a body that swallowed it (a bare ``except:``) still loops."""

    def __init__(self, *args):
        super().__init__(*args)
        _tripped[0] = True


class Refused(RuntimeError):
    """An error a batching rule raises as torch.func's vmap does (batch_norm updating unbatched running
    statistics): it reaches the caller, the loop does not retry the call."""


_lock = threading.Lock()
# the batched level now running: (thread id, batch size), or None
_active = [None]
_tripped = [False]
_inputs = []  # the running level's input storages
# the running level's randomness ("error", "different", "same") and, under "different", the global generator's
# state after the last draw a rule made for the whole batch (see draw_for_batch)
_random = {"mode": "error", "after": None}


def tripped() -> bool:
    """Was a NeedLoop made since the running batched level began."""
    return _tripped[0]


def batch_size():
    """The batch size of this thread's running batched vmap, or None."""
    a = _active[0]
    if a is None or a[0] != threading.get_ident():
        return None
    return a[1]


def _refuse(what: str):
    if batch_size() is not None:
        raise NeedLoop(what)
    raise RuntimeError(f"a tensor batched by forgegrad.func.vmap was used outside its vmap call ({what}); return "
                       "it from the vmapped function instead")


def _raising(name: str):
    def get(self):
        _refuse(name)

    def put(self, value):
        _refuse(name)

    return property(get, put)


class BatchedTensor(Tensor):
    """One element of a batch, as vmap's function sees it (see the module's notes)."""

    __slots__ = ("_phys",)

    _data = _raising("_data")
    _ctx = _raising("_ctx")
    grad = _raising("grad")
    _out_index = _raising("_out_index")
    _retains_grad = _raising("_retains_grad")

    @property
    def requires_grad(self) -> bool:
        return self._phys.requires_grad

    @requires_grad.setter
    def requires_grad(self, value) -> None:
        _refuse("requires_grad")

    @property
    def shape(self):
        return self._phys.shape[1:]

    @property
    def dtype(self):
        return self._phys.dtype

    @property
    def device(self):
        return self._phys.device

    @property
    def ndim(self) -> int:
        return self._phys.ndim - 1

    @property
    def is_leaf(self) -> bool:
        _refuse("is_leaf")

    @property
    def grad_fn(self):
        _refuse("grad_fn")

    def dim(self) -> int:
        return self._phys.ndim - 1

    def size(self, dim=None):
        shape = self.shape
        return shape if dim is None else shape[dim]

    def numel(self) -> int:
        n = 1
        for s in self.shape:
            n *= s
        return n

    def __len__(self) -> int:
        if self.ndim == 0:
            raise TypeError("len() of a 0-d tensor")
        return self.shape[0]

    def is_floating_point(self) -> bool:
        return self._phys.is_floating_point()

    def is_complex(self) -> bool:
        return self._phys.is_complex()

    def detach(self) -> Tensor:
        return wrap(self._phys.detach())

    def contiguous(self, memory_format=None):
        return self

    def _inplace(self, compute, name, *others, cast=False):
        """An in-place op (add_, relu_, +=, copy_, ...) on one element is the same op on the batch: forgegrad's
        in-place machinery runs on the physical tensors (so a write through a view reaches its base),
        ``compute`` on their logical values. A write into the call's inputs, and whatever the machinery refuses,
        loops (the loop raises its own message, or succeeds)."""
        from .._inplace import inplace
        b = batch_size()
        if b is None:
            _refuse(name)
        p = self._phys._data
        if type(p) is not np.ndarray or any(np.may_share_memory(p, a) for a in _inputs):
            # a write into the caller's inputs could not be undone if the call then loops (which would run on the
            # written values): the loop writes them, element by element, as torch does
            raise NeedLoop(f"{name}: a write into a vmap input")
        batched = [is_batched(o) for o in others]
        shape = tuple(self.shape)

        def physical(p, *ops):
            out = compute(wrap(p), *[wrap(o) if w else o for o, w in zip(ops, batched)])
            if not isinstance(out, Tensor) or tuple(out.shape) != shape:
                raise NeedLoop(f"{name}: result shape")
            return out._phys if is_batched(out) else phys(out, b)
        try:
            inplace(self._phys, physical, name, *[o._phys if w else o for o, w in zip(others, batched)], cast=cast)
        except NeedLoop:
            raise
        except Exception as e:
            raise NeedLoop(f"{name}: {e}") from None
        return self

    def _new(self, make, size, dtype, requires_grad, device=None):  # new_zeros & co: unbatched, this dtype
        return self._phys._new(make, size, dtype, requires_grad, device)

    def _cast(self, dtype):
        out = self._phys._cast(dtype)
        return self if out is self._phys else wrap(out)

    def to(self, *args, **kwargs):
        out = self._phys.to(*args, **kwargs)
        return self if out is self._phys else wrap(out)

    def __repr__(self) -> str:
        return f"BatchedTensor(shape={tuple(self.shape)}, batch={self._phys.shape[0]})"

    def __reduce_ex__(self, protocol):
        _refuse("pickling")

    def __deepcopy__(self, memo):
        _refuse("deepcopy")


def wrap(p: Tensor) -> BatchedTensor:
    """The logical tensor of physical ``p`` (batch at dim 0)."""
    t = object.__new__(BatchedTensor)
    t._phys = p
    return t


def is_batched(x) -> bool:
    return type(x) is BatchedTensor


def phys(x, b: int) -> Tensor:
    """``x``'s physical tensor: a batched one's own, a plain tensor expanded to the batch (a view)."""
    if type(x) is BatchedTensor:
        return x._phys
    return x.unsqueeze(0).expand((b,) + tuple(x.shape))


def _contains_batched(a) -> bool:
    if type(a) is BatchedTensor:
        return True
    if type(a) in (list, tuple):
        for x in a:
            if _contains_batched(x):
                return True
    elif type(a) is dict:
        for x in a.values():
            if _contains_batched(x):
                return True
    return False


def _hook(cls, args, kwargs):
    """Function.apply's entry while a batched vmap runs: an op touching a BatchedTensor goes to its rule."""
    if not (_contains_batched(args) or kwargs and _contains_batched(kwargs)):
        return NotImplemented
    b = batch_size()
    if b is None:  # another thread's batched value, or one that escaped its vmap
        _refuse(cls.__name__)
    from ._batch_rules import FUNCTION_RULES, RULES
    op = cls.op
    rule = RULES.get(op.name) if op is not None and op.function is cls else FUNCTION_RULES.get(cls)
    if rule is None:
        raise NeedLoop(f"no batching rule for {cls.__name__}")
    try:
        return rule(cls, b, args, kwargs)
    except (NeedLoop, Refused):
        raise
    except Exception as e:  # bad input: the loop raises the op's own message, for the logical shapes
        raise NeedLoop(f"{cls.__name__}: {e}") from None


class batching:
    """Context: a batched vmap of batch size ``b`` runs in this thread (installs the apply hook); ``inputs``:
    the storage arrays of the call's input tensors (an in-place write into them loops)."""

    def __init__(self, b: int, inputs=(), randomness: str = "error"):
        self.b = b
        self.inputs = list(inputs)
        self.randomness = randomness

    def __enter__(self):
        with _lock:
            if _active[0] is not None:
                raise NeedLoop("a batched vmap already runs")
            _active[0] = (threading.get_ident(), self.b)
            _tripped[0] = False
            _inputs[:] = self.inputs
            _random["mode"] = self.randomness
            self._prev_hook = _autograd._batch_hook  # (an autocast region's: back when the vmap ends)
            _autograd._batch_hook = _hook
        _grad_state.batching = True  # the layers' inference fast paths (graph_free) read storage directly
        return self

    def __exit__(self, *exc):
        _grad_state.batching = False
        with _lock:
            _active[0] = None
            _inputs.clear()
            _autograd._batch_hook = self._prev_hook
        return False


def active_elsewhere() -> bool:
    """A batched vmap runs (in this thread or another)."""
    return _active[0] is not None


def randomness() -> str:
    """The running batched level's randomness mode."""
    return _random["mode"]


def draw_for_batch(draw):
    """``draw()`` (a random op on the whole batch, which draws the elements' numbers one element after the other,
    as the loop would) under randomness="different": NeedLoop if anything else drew from the global generator
    since the call began (the loop would interleave those draws); vmap checks at the end that nothing drew after
    (see sanctioned_state)."""
    from .. import random as _rnd
    gen = _rnd.generator()
    now = (gen, gen.bit_generator.state)
    after = _random["after"]
    if after is None or after[0] is not gen or after[1] != now[1]:
        raise NeedLoop("a random draw that is not the whole batch's")
    out = draw()
    _random["after"] = (gen, gen.bit_generator.state)
    return out


def sanctioned_state(state):
    """Where the generator must be: ``state`` (gen, bit state) at the start of a "different" call (set by vmap),
    then after each draw_for_batch; returns the current one."""
    if state is not None:
        _random["after"] = state
    return _random["after"]


def loop_level(ids):
    """Context: a vmap loop runs with the sliced inputs ``ids`` (batch_norm's check in the loop reads them)."""
    from ..grad_mode import _state
    prev = _state.__dict__.get("vmap_loop")

    class _Level:
        def __enter__(self):
            _state.vmap_loop = (prev or frozenset()) | frozenset(ids)

        def __exit__(self, *exc):
            _state.vmap_loop = prev
            return False
    return _Level()


BATCH_NORM_REFUSED = (
    "Batch norm got a batched tensor as input while the running_mean or running_var, which will be updated in place, "
    "were not batched.\nIf you are using a module and do not need eval mode, please set `track_running_stats` to be "
    "False.If you are using a prebuilt module and do not need eval mode, please see the functorch website for "
    "resources on how to patch your module to work with vmap")


def check_batch_norm_in_loop(running_mean, running_var) -> None:
    """vmap's loop: batch_norm in training mode with running statistics that are not slices of the vmapped inputs
    raises torch's error, as in the batched call (each element would update them in turn)."""
    from ..grad_mode import _state
    ids = _state.__dict__.get("vmap_loop")
    if ids is None:
        return
    if any(t is not None and id(t) not in ids for t in (running_mean, running_var)):
        raise Refused(BATCH_NORM_REFUSED)


class inner_level:
    """Context: a batched level of size ``b`` over plain (physical) tensors while this thread's batched vmap runs,
    that level set aside meanwhile and restored after (a NeedLoop made inside does not trip it). jacrev's rows
    inside a batched vmap: the differentiated graph there is one of physical tensors, so the rows' batch is a
    level of its own over it."""

    def __init__(self, b: int):
        self.b = b

    def __enter__(self):
        if batch_size() is None:
            raise NeedLoop("no batched vmap runs")
        self.saved = (_active[0], _tripped[0], list(_inputs), dict(_random), _grad_state.batching)
        with _lock:
            _active[0] = None
        self.level = batching(self.b)
        try:
            self.level.__enter__()
        except BaseException:
            self._restore()
            raise
        return self

    def _restore(self):
        with _lock:
            _active[0], _tripped[0], _inputs[:] = self.saved[0], self.saved[1], self.saved[2]
            _random.update(self.saved[3])
            _autograd._batch_hook = _hook
        _grad_state.batching = self.saved[4]

    def __exit__(self, *exc):
        self.level.__exit__(*exc)
        self._restore()
        return False
