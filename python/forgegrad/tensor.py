"""forgegrad.Tensor: float32 numpy storage with autograd.

The storage is ``t._data`` (``t.numpy()``), a numpy array shared without copies with the caller
(``forgegrad.tensor(arr)``, ``t.numpy()``, ``np.asarray(t)``). Float data is float32 (float64, float16 where asked for);
``Tensor(ndarray)`` of numbers gives the default floating dtype, as torch's legacy constructor (``tensor()`` keeps
int8 ... int32 and float16, as torch's; integer data never requires grad; forgegrad's own code keeps an array's
integers with ``Tensor._stored``); comparisons give bool tensors. On another
device (``t.to("cuda")``, factories with ``device=``) the storage is that device's array, reached
through forgegrad.devices (docs/devices.md); ``numpy()`` then refuses and ``cpu()`` copies.
"""
from __future__ import annotations

import os
import sys
from typing import Optional, Tuple

import numpy as np

from . import _print_options
from . import _version_counter as _vc
from . import devices as _devices
from . import dtypes as _dtypes
from ._tensor_conversions import TensorConversions
from ._tensor_fills import TensorFills
from ._tensor_methods import TensorMethods
from .devices import MetaArray
from .grad_mode import _inference_threads, watch_inference_seen

_F32 = np.dtype(np.float32)
_inference_seen = False  # set by grad_mode.watch_inference_seen (below): an inference_mode block has run

__all__ = ["Tensor"]


def _to_storage(data, dtype=None, copy: bool = False) -> np.ndarray:
    """float -> float32, int -> int64, bool stays bool; no copy when already right (unless copy)."""
    if isinstance(data, Tensor):
        data = data._data
    if type(data) is MetaArray:
        return data if dtype is None else data.astype(dtype)
    if not isinstance(data, np.ndarray) and _devices.device_of(data) != "cpu":  # another device's array
        if dtype is not None and np.dtype(dtype) != data.dtype:
            raise TypeError(f"a {_devices.device_of(data)} array of dtype {data.dtype} cannot be stored as "
                            f"{np.dtype(dtype)} here; cast the tensor with .to(dtype)")
        return data
    if dtype is not None:
        want = np.dtype(dtype)
        arr = np.array(data, dtype=want, copy=copy) if copy else np.asarray(data, dtype=want)
        return arr
    arr = np.array(data, copy=copy) if copy else np.asarray(data)
    kind = arr.dtype.kind
    if kind == "f" and arr.dtype != np.float32:
        # float64 data stays float64 under set_default_dtype(float64) (Python floats arrive as float64)
        if arr.dtype != np.float64 or _dtypes._DEFAULT_FLOAT is not _dtypes.float64:
            with np.errstate(over="ignore"):  # past float32's range: inf (torch's cast), without numpy's warning
                arr = arr.astype(np.float32)
    elif kind == "c" and arr.dtype != np.complex64:
        # Python complex numbers arrive as complex128: the default complex dtype, as float64 above
        if arr.dtype != np.complex128 or _dtypes._DEFAULT_FLOAT is not _dtypes.float64:
            arr = arr.astype(np.complex64)
    elif kind in "iu" and arr.dtype != np.int64:
        if arr.dtype == np.uint64 and arr.size and int(arr.max()) > np.iinfo(np.int64).max:
            raise OverflowError(f"uint64 data up to {int(arr.max())} does not fit forgegrad's int64 storage")
        arr = arr.astype(np.int64)
    elif kind == "V" and arr.dtype.name == "bfloat16":  # ml_dtypes' bfloat16 array: forgegrad.bfloat16
        _dtypes.load_bfloat16()
    elif kind not in "fiubc":
        raise TypeError(f"forgegrad tensors hold float, complex, integer or bool data, got dtype {arr.dtype}")
    return arr


class Tensor(TensorFills, TensorConversions, TensorMethods):
    """An n-dimensional array with automatic differentiation, on the CPU or another device.

    Args:
        data: array-like. A list or tuple of numbers, an ndarray or numpy scalar of bool, integer or float
            data gets the default floating dtype, as torch.Tensor's (``forgegrad.tensor`` keeps an array's
            dtype); a Tensor keeps its float dtype (integers as int64), complex data complex64.
        requires_grad: record operations on this tensor for backward().
    """

    # _post_hooks is only set on leaves that have post-accumulate-grad hooks, _grad_hooks on leaves that have
    # register_hook hooks (a non-leaf's are kept by its node), _own_version only on the
    # tensors ``.data`` returns, _view_of only on views made outside the graph of a tensor that has no node
    # (its base, for an in-place write recorded through the view: forgegrad._view_rebase), _graph_base on views
    # made in the graph (their base, which their node holds weakly: forgegrad._graph_memory); all read with getattr
    __slots__ = ("_data", "grad", "requires_grad", "_ctx", "_out_index", "_retains_grad", "_post_hooks",
                 "_own_version", "_view_of", "_grad_hooks", "_graph_base", "__weakref__")
    __array_priority__ = 1000  # numpy defers binary operators to Tensor
    _is_inference = False  # True on forgegrad._inference_tensors.InferenceTensor (tensors made in inference mode)
    _inference_writable = False  # True on its DetachedInferenceTensor (in-place writes let through, as torch's)

    def __init__(self, data, requires_grad: bool = False, dtype=None):
        if dtype is None and (type(data) in (list, tuple) or (type(data) is np.ndarray and data.dtype.kind in "iub")):
            # torch.Tensor([1, 2]) and torch.Tensor(int or bool ndarray) (the legacy constructor) give the default
            # floating dtype; forgegrad's own code keeps an array's integers with Tensor._stored
            dtype = _dtypes._DEFAULT_FLOAT.dtype
        self._data = _to_storage(data, dtype)
        self.grad: Optional[Tensor] = None
        self._ctx = None
        self._out_index = 0
        self._retains_grad = False
        self.requires_grad = False
        if _inference_threads and type(self) is Tensor:  # (only while some thread is in inference mode)
            self.__class__ = _class_in_mode(Tensor)
        if requires_grad:
            self.requires_grad_(True)

    @staticmethod
    def _stored(data, requires_grad: bool = False) -> "Tensor":
        """A Tensor of ``data`` by forgegrad's storage rule (``_to_storage``: float -> float32, int -> int64, bool
        stays; a list or tuple of numbers the default floating dtype): what forgegrad's own code means by a
        Tensor of an ndarray, where ``Tensor(ndarray)`` gives torch's default floating dtype."""
        if type(data) in (list, tuple):
            return Tensor(data, requires_grad)
        arr = _to_storage(data)
        return Tensor(arr, requires_grad, dtype=arr.dtype)

    @classmethod
    def _wrap(cls, arr: np.ndarray) -> "Tensor":
        """Wrap a kernel output without any conversion (internal)."""
        t = cls.__new__(cls)
        if type(arr) is not np.ndarray or arr.dtype is not _F32:  # the common case skips both
            on_device = type(arr) is not np.ndarray and _devices.device_of(arr) != "cpu"
            if not on_device and not isinstance(arr, np.ndarray):
                arr = np.asarray(arr)
            # numpy's promotion to float64 is undone on the CPU (and in meta's shape rules); a device
            # Function returns the dtype it means
            if arr.dtype == np.float64 and (not on_device or type(arr) is MetaArray):
                arr = arr.astype(np.float32)
        t._data = arr
        t.grad = None
        t._ctx = None
        t._out_index = 0
        t._retains_grad = False
        t.requires_grad = False
        if _inference_threads and cls is Tensor:  # (made plain first: InferenceTensor's requires_grad is a property)
            k = _class_in_mode(cls)
            if k is not cls:
                t.__class__ = k
        return t

    @classmethod
    def _wrap_exact(cls, arr) -> "Tensor":
        """Wrap an op's output keeping its dtype (float64 ops; internal)."""
        if not isinstance(arr, np.ndarray) and _devices.device_of(arr) == "cpu":  # numpy scalars, lists
            arr = np.asarray(arr)
        t = cls.__new__(cls)
        t._data, t.grad, t._ctx, t._out_index, t._retains_grad, t.requires_grad = arr, None, None, 0, False, False
        if _inference_threads and cls is Tensor:
            k = _class_in_mode(cls)
            if k is not cls:
                t.__class__ = k
        return t

    # ---- basic properties ----------------------------------------------------------------
    @property
    def data(self) -> "Tensor":
        """As torch's: a Tensor sharing this storage, outside the graph (never requires grad); writing
        to it (``p.data -= lr * p.grad``, ``p.data.zero_()``) changes this tensor without autograd
        seeing it. Assigning ``t.data = other`` replaces the storage with ``other``'s. The numpy array
        itself is ``t.numpy()``. Its version counter is its own (torch's), so writes through it are not
        seen by the graph's saved-tensor checks."""
        t = Tensor._wrap_exact(self._data)
        t._own_version = [0]
        if _inference_seen:
            _view_kind(t, self)
            _detached_kind(t)
        return t

    @data.setter
    def data(self, value) -> None:
        if isinstance(value, Tensor):
            value = value._data
        elif not (hasattr(value, "shape") and hasattr(value, "dtype")):  # a storage array (numpy, meta, cuda)
            raise TypeError(f"data must be a Tensor, got {type(value).__name__}")
        self._data = value

    @property
    def _version(self) -> int:
        """How many in-place writes this tensor's storage has had, counted with its views' (torch's
        ``_version``); backward refuses a saved tensor whose version moved on (forgegrad._version_counter)."""
        own = getattr(self, "_own_version", None)
        return _vc.version_of(self._data) if own is None else own[0]

    @property
    def shape(self) -> Tuple[int, ...]:
        return self._data.shape

    @property
    def dtype(self) -> "_dtypes.dtype":
        return _dtypes._BY_NUMPY[self._data.dtype]

    @property
    def device(self) -> "_devices.device":
        return _devices.device_object(_devices.device_of(self._data))

    @property
    def is_meta(self) -> bool:
        return type(self._data) is MetaArray

    @property
    def ndim(self) -> int:
        return self._data.ndim

    @property
    def is_leaf(self) -> bool:
        return self._ctx is None

    @property
    def grad_fn(self):
        from .autograd import _rebound
        if _rebound:  # a view whose base was written in place under autograd: its new node
            from ._view_rebase import rebase_inputs
            rebase_inputs((self,))
        return self._ctx

    def dim(self) -> int:
        return self._data.ndim

    def size(self, dim: Optional[int] = None):
        return self._data.shape if dim is None else self._data.shape[dim]

    def numel(self) -> int:
        return int(self._data.size)

    def __len__(self) -> int:
        if self.ndim == 0:
            raise TypeError("len() of a 0-d tensor")
        return self._data.shape[0]

    def item(self):
        if self._data.size != 1:
            raise ValueError(f"item(): only one-element tensors can be converted, got shape {self.shape}")
        return _devices.to_host(self._data).reshape(()).item()  # from a device: a copy to the host

    def _host_only(self, what: str) -> None:
        """numpy()/__array__ share the storage, so a tensor on another device refuses (as torch)."""
        if type(self._data) is MetaArray:
            raise RuntimeError(f"{what}: a meta tensor (shape {self.shape}) has no data")
        dev = _devices.device_of(self._data)
        raise TypeError(f"can't convert {dev} device type tensor to numpy. Use Tensor.cpu() to copy the tensor to "
                        "host memory first.")

    def numpy(self, *, force: bool = False) -> np.ndarray:
        """The storage array itself (no copy). Detach first if you will modify it. ``force=True`` (torch's) copies
        a tensor on another device to the host instead of refusing."""
        if force and not isinstance(self._data, np.ndarray) and _devices.has_data(self._data):
            return _devices.to_host(self._data)
        if not isinstance(self._data, np.ndarray):
            self._host_only("numpy()")
        if self._data.dtype is _dtypes._BF16 and not _called_from_forgegrad():
            _bfloat16_refused("numpy()")
        return self._data

    def tolist(self):
        return _devices.to_host(self._data).tolist()

    def __array__(self, dtype=None, copy=None):
        if not isinstance(self._data, np.ndarray):
            self._host_only("__array__")
        if self._data.dtype is _dtypes._BF16 and (dtype is None or np.dtype(dtype) == self._data.dtype) and \
                not _called_from_forgegrad():
            _bfloat16_refused("__array__")
        if dtype is not None and np.dtype(dtype) != self._data.dtype:
            return self._data.astype(dtype)
        return self._data

    def __repr__(self) -> str:
        if type(self._data) is MetaArray:
            return f"tensor(..., device='meta', size={self.shape}" + (
                f", dtype={self.dtype})" if self.dtype != np.float32 else ")")
        host = _devices.to_host(self._data)
        body = _print_options.array_body(host.astype(_F32) if host.dtype is _dtypes._BF16 else host)
        extra = ""
        if self._ctx is not None:
            extra = f", grad_fn=<{type(self._ctx).__name__}Backward>"
        elif self.requires_grad:
            extra = ", requires_grad=True"
        if self._data.dtype != np.float32 and not (self._data.dtype == _dtypes.default_complex() and host.size):
            extra = f", dtype={self._data.dtype}" + extra  # (torch leaves out the default complex dtype too)
        if host.size == 0 and host.ndim != 1:  # torch's: an empty tensor's repr gives its shape
            extra = f", size={tuple(host.shape)}" + extra
        if host is not self._data:  # torch's order: device, dtype, then the graph
            extra = f", device='{_devices.device_of(self._data)}'" + extra
        return f"tensor({body}{extra})"

    def __bool__(self) -> bool:
        if self._data.size != 1:
            raise RuntimeError(f"Boolean value of a tensor with {self._data.size} values is ambiguous")
        return bool(self.item())

    def __hash__(self):
        return id(self)

    # one-element tensors convert like torch's: int(t), float(t), and t as an index (integer dtypes)
    def __int__(self) -> int:
        return int(self.item())

    def __float__(self) -> float:
        return float(self.item())

    def __index__(self) -> int:
        if self._data.dtype.kind not in "iub":
            raise TypeError("only integer tensors of a single element can be converted to an index")
        return int(self.item())

    # ---- autograd --------------------------------------------------------------------------
    def __getstate__(self):
        # copy.deepcopy and pickle: a view's note of its base (``_view_of``, see forgegrad._view_rebase;
        # ``_graph_base``, forgegrad._graph_memory) is no part of its value; kept, a pickled slice would carry the
        # whole base with it
        state = object.__getstate__(self)
        if type(state) is tuple and ("_view_of" in state[1] or "_graph_base" in state[1]):
            state = (state[0], {k: v for k, v in state[1].items() if k not in ("_view_of", "_graph_base")})
        return state

    def requires_grad_(self, requires_grad: bool = True) -> "Tensor":
        if requires_grad and self._data.dtype.kind not in "fc" and not _dtypes.is_floating(self._data.dtype):
            raise RuntimeError(f"only floating point and complex tensors can require gradients, got dtype {self.dtype}")
        if not requires_grad and self._ctx is not None:
            raise RuntimeError("requires_grad_(False) is only valid on leaf tensors; use detach()")
        if requires_grad and self._is_inference:
            _check_requires_grad(self)
        self.requires_grad = bool(requires_grad)
        return self

    def retain_grad(self) -> None:
        """Also store the gradient of this non-leaf tensor in .grad during backward()."""
        if not self.requires_grad:
            raise RuntimeError("retain_grad() on a tensor that does not require grad")
        if self._ctx is None:  # a leaf stores its .grad anyway (torch's no-op; flagged, it got it twice)
            return
        from .autograd import _rebound
        if _rebound:  # a view whose base was written in place: its new node (torch's retain_grad asks for it too)
            from ._view_rebase import rebase_inputs
            rebase_inputs((self,))
        self._retains_grad = True

    def register_post_accumulate_grad_hook(self, hook) -> "_HookHandle":
        """Call ``hook(tensor)`` each time backward() has finished accumulating this leaf's ``.grad``.

        As torch's hook of the same name: it fires once per backward pass, after every contribution to
        the leaf's gradient in that pass has been added (a weight used twice fires once), and only for
        leaves that received a gradient. The hook returns None. Returns a handle with ``remove()``.
        """
        if self._ctx is not None:
            raise RuntimeError("post accumulate grad hooks cannot be registered on non-leaf tensors")
        if not self.requires_grad:
            raise RuntimeError("cannot register a hook on a tensor that doesn't require gradient")
        if not callable(hook):
            raise TypeError(f"register_post_accumulate_grad_hook: hook must be callable, got {type(hook).__name__}")
        hooks = getattr(self, "_post_hooks", None)
        if hooks is None:
            hooks = self._post_hooks = {}
        return _HookHandle(self, hooks, hook)

    def register_hook(self, hook) -> "_HookHandle":
        """Call ``hook(grad)`` with this tensor's gradient during backward(); a Tensor it returns replaces the
        gradient (for the hooks after it, for ``.grad`` and for the rest of the pass), None keeps it.

        As torch's: a tensor used several times gets one call with the summed gradient; hooks run in the
        order they were registered; on a leaf they run before the gradient is accumulated into ``.grad``
        (and before its post-accumulate hooks), on a non-leaf before its node's backward and before
        retain_grad() stores it. A hook registered on a tensor that is then written in place sees the
        gradient of its value before the write (it stays with the node it had). Returns a handle with
        ``remove()``.
        """
        if not self.requires_grad:
            raise RuntimeError("cannot register a hook on a tensor that doesn't require gradient")
        if not callable(hook):
            raise TypeError(f"register_hook: hook must be callable, got {type(hook).__name__}")
        from .autograd import _rebound
        if _rebound and not self._has_node_hooks():
            # a view whose base was written in place under autograd: its new node. (torch's: a view that already
            # has hooks keeps adding to them, on the node they were registered with, until something asks for its
            # grad_fn or an op uses it; forgegrad's view then gets its new node, as torch's)
            from ._view_rebase import rebase_inputs
            rebase_inputs((self,))
        if self._ctx is None:
            hooks = getattr(self, "_grad_hooks", None)
            if hooks is None:
                hooks = self._grad_hooks = {}
        else:
            import weakref
            by_output = self._ctx.__dict__.setdefault("tensor_hooks", {})
            entry = by_output.get(self._out_index)
            if entry is None or entry[0]() is not self:
                entry = by_output[self._out_index] = (weakref.ref(self), {} if entry is None else entry[1])
            hooks = entry[1]
        return _HookHandle(self, hooks, hook)

    def _has_node_hooks(self) -> bool:
        """Whether this non-leaf has had register_hook hooks on its current node (removed ones count, as torch's
        hook dict stays)."""
        ctx = self._ctx
        entry = None if ctx is None else ctx.__dict__.get("tensor_hooks", {}).get(self._out_index)
        return entry is not None and entry[0]() is self

    def detach(self) -> "Tensor":
        """A tensor sharing this storage, cut from the graph."""
        t = Tensor._wrap_exact(self._data)
        if _inference_seen:  # a view: its kind is this tensor's (forgegrad._inference_tensors)
            _view_kind(t, self)
            _detached_kind(t)
        return t

    def detach_(self) -> "Tensor":
        from ._view_rebase import is_view
        if is_view(self):
            raise RuntimeError("Can't detach views in-place. Use detach() instead.")
        self._ctx = None
        self.requires_grad = False
        return self

    def _accumulate_grad(self, g, in_place: bool = True) -> None:
        if getattr(type(g), "_is_sparse_storage", False) or (
                self.grad is not None and getattr(type(self.grad._data), "_is_sparse_storage", False)):
            from .sparse._autograd import accumulate  # a sparse gradient (Embedding(sparse=True)'s weight)
            return accumulate(self, g)
        if self.grad is None:
            if isinstance(g, np.ndarray) or _devices.device_of(g) == "cpu":  # numpy arrays and scalars
                self.grad = Tensor._wrap_exact(np.array(g, dtype=self._data.dtype, copy=True))
            else:  # another device: a copy through its backend (the engine checked the dtype)
                self.grad = Tensor._wrap_exact(_devices.copy(g))
        else:
            cur = self.grad._data
            # in place, as torch's AccumulateGrad outside create_graph: no new array (and its page faults)
            # per backward; a read-only grad, another dtype or a grad that would widen takes a new array, as
            # does one the engine adopted in this pass (in_place False: that array may also be another
            # node's pending gradient, e.g. Add hands one array to both inputs)
            if (in_place and type(cur) is np.ndarray and cur.flags.writeable and isinstance(g, np.ndarray)
                    and g.dtype == cur.dtype and g.shape == cur.shape):
                np.add(cur, g, out=cur)
            else:
                self.grad._data = _devices.add(cur, g)

    def backward(self, gradient=None, retain_graph: Optional[bool] = None, create_graph: bool = False,
                 inputs=None) -> None:
        """Accumulate d(self)/d(leaf) into every leaf's .grad.

        Args:
            gradient: d(loss)/d(self); may be omitted only when self has one element.
            retain_graph: keep the saved buffers so backward can run through the graph again (default:
                create_graph, as torch's).
            create_graph: record the graph of the gradients: ``.grad`` then has a grad_fn and can be
                differentiated again (double backward; see forgegrad._create_graph).
            inputs: a Tensor or a sequence of them: accumulate into these tensors' .grad only (a non-leaf
                among them retains its grad), as torch's; the nodes that lead to none of them are not run.
        """
        from .autograd import _rebound, run_backward
        if _rebound:  # a view whose base was written in place under autograd: its new node
            from ._view_rebase import rebase_inputs
            rebase_inputs((self,))
        if inputs is not None or create_graph:
            from ._autograd_grad import backward
            return backward(self, gradient, retain_graph, create_graph, inputs=inputs)
        if not self.requires_grad:
            raise RuntimeError("element 0 of tensors does not require grad and does not have a grad_fn")
        if gradient is None:
            if self._data.size != 1:
                raise RuntimeError(
                    f"grad can be implicitly created only for scalar outputs; backward() on a tensor of "
                    f"shape {self.shape} needs a gradient argument of that shape"
                )
            dev = _devices.device_of(self._data)
            g = np.ones(self.shape, dtype=self._data.dtype) if dev == "cpu" else \
                _devices.full(self.shape, 1, self._data.dtype, dev)
        else:
            g = _seed_storage(gradient, self)
            if g.shape != self.shape:
                raise ValueError(f"backward: gradient has shape {g.shape}, expected {self.shape}")
        run_backward(self, g, retain_graph=bool(retain_graph))


_PACKAGE = os.path.dirname(os.path.abspath(__file__))


def _called_from_forgegrad() -> bool:
    """Whether numpy() / __array__'s caller is forgegrad's own code, which reads the storage (an ml_dtypes bfloat16
    array) as it reads any other: only a user's call refuses a bfloat16 tensor, as torch's does."""
    return sys._getframe(2).f_code.co_filename.startswith(_PACKAGE)


def _bfloat16_refused(what: str):
    # torch's own error: numpy has no bfloat16 (ml_dtypes' is no numpy dtype torch knows)
    raise TypeError(f"Got unsupported ScalarType BFloat16: {what} of a bfloat16 tensor; numpy has no bfloat16 "
                    "dtype, so convert first with .float() (as torch)")


def _seed_storage(gradient, t: "Tensor"):
    """backward(gradient)'s seed as storage on t's device, in t's dtype."""
    here = _devices.device_of(t._data)
    if isinstance(gradient, Tensor):
        there = _devices.device_of(gradient._data)
        if there != here:
            raise RuntimeError(f"backward: the gradient is on {there} but the tensor is on {here}; move it with "
                               f".to({here!r})")
        if here != "cpu":
            return gradient._cast(t._data.dtype)._data
    elif here != "cpu":
        return _devices.transfer(_to_storage(gradient, t._data.dtype), here)
    return _to_storage(gradient, t._data.dtype)


class _HookHandle:
    """Removes one hook registered on a tensor; run_backward only looks for hooks while any exist."""

    _next_id = 0
    live = 0  # hooks registered and not removed, over all tensors

    def __init__(self, owner, hooks: dict, fn):
        _HookHandle._next_id += 1
        self.id = _HookHandle._next_id
        self._hooks = hooks
        hooks[self.id] = fn
        _HookHandle.live += 1

    def remove(self) -> None:
        if self._hooks.pop(self.id, None) is not None:
            _HookHandle.live -= 1


from ._inference_tensors import (check_requires_grad as _check_requires_grad,  # noqa: E402  (they need Tensor)
                                 class_in_mode as _class_in_mode, detached_kind as _detached_kind,
                                 view_kind as _view_kind)
watch_inference_seen(globals())
