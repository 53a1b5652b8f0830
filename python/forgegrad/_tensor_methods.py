"""The operators and methods of forgegrad.Tensor, each a call into one op of the registry.

``TensorMethods`` is a mixin of Tensor: its methods find their op by name in the registry when
called (the op modules register themselves when forgegrad is imported, after this class exists).
"""
from __future__ import annotations

import numpy as np

from . import _version_counter as _vc
from . import grad_mode, return_types
from .ops._util import normalize_axis, single_axis
from .ops.registry import _OPS
from ._tensor_args import _args_or_keyword, _as_dtype, _corrected, _np_dtype, _shape_args

_NUMBER = (int, float, bool, np.number)


def _stored(x):
    """An operator's array or list operand as a tensor: an ndarray keeps its integers (torch: an int tensor plus an
    int ndarray stays int)."""
    from .tensor import Tensor  # (tensor.py imports this module)
    return Tensor._stored(x)


def _max_min_other(dim, other, keepdim, who):
    """The tensor of ``x.max(other)`` / ``x.max(other=...)`` (torch's overload; no dim or keepdim with it)."""
    if other is not None and dim is not None or keepdim is not False:
        raise TypeError(f"{who}(): give other (a tensor), or dim and keepdim, not both")
    return _other_tensor(dim if other is None else other, who)


def _other_tensor(other, name):
    """torch.maximum and its kin take a tensor ``other`` (a number raises there too: use clamp)."""
    if not isinstance(other, TensorMethods):
        raise TypeError(f"{name}(): argument 'other' must be a forgegrad.Tensor, got {type(other).__name__} "
                        f"(for a number use clamp(min=...) / clamp(max=...))")
    return other


class TensorMethods:
    __slots__ = ()

    # ---- arithmetic operators ------------------------------------------------------------------------
    # (The operators and methods call an op's ``apply``, not the record itself: their tensor arguments are Tensors
    # or numbers already, which is all the record's argument check looks at.)
    def _operand(self, x):
        """Scalars stay Python scalars (float32 results); arrays/lists become tensors."""
        if isinstance(x, _OPERAND):
            return x
        return _stored(x)

    def __add__(self, other):
        return _OPS["add"].apply(self, other if isinstance(other, _OPERAND) else _stored(other))

    def __radd__(self, other):
        return _OPS["add"].apply(other if isinstance(other, _OPERAND) else _stored(other), self)

    def __sub__(self, other):
        return _OPS["sub"].apply(self, other if isinstance(other, _OPERAND) else _stored(other))

    def __rsub__(self, other):
        return _OPS["sub"].apply(other if isinstance(other, _OPERAND) else _stored(other), self)

    def __mul__(self, other):
        return _OPS["mul"].apply(self, other if isinstance(other, _OPERAND) else _stored(other))

    def __rmul__(self, other):
        return _OPS["mul"].apply(other if isinstance(other, _OPERAND) else _stored(other), self)

    def __truediv__(self, other):
        return _OPS["div"].apply(self, other if isinstance(other, _OPERAND) else _stored(other))

    def __rtruediv__(self, other):
        if (self._data.dtype.kind in "fV" and self._data.dtype.itemsize == 2 and isinstance(other, (int, float))
                and not isinstance(other, bool)):
            # torch's number / tensor is tensor.reciprocal() * number: in float16 / bfloat16 the reciprocal is
            # rounded before the product (2.5 / 3 is 0.8359375 in bfloat16, not 0.83203125)
            return _OPS["mul"].apply(_OPS["reciprocal"](self), other)
        return _OPS["div"].apply(other if isinstance(other, _OPERAND) else _stored(other), self)

    def __pow__(self, other):
        return _OPS["pow"].apply(self, other if isinstance(other, _OPERAND) else _stored(other))

    def __rpow__(self, other):
        return _OPS["pow"].apply(other if isinstance(other, _OPERAND) else _stored(other), self)

    def __neg__(self):
        return _OPS["neg"].apply(self)

    def __pos__(self):
        return self

    def __abs__(self):
        return _OPS["abs"].apply(self)

    def add(self, other, alpha=1):
        return self + (other if alpha == 1 else self._operand(other) * alpha)

    def sub(self, other, alpha=1):
        return self - (other if alpha == 1 else self._operand(other) * alpha)

    mul = __mul__

    def div(self, other, *, rounding_mode=None):
        """torch.div: true division, or rounded toward zero ('trunc') or down ('floor', torch.floor_divide)."""
        if rounding_mode is None:
            return self / other
        if rounding_mode == "floor":
            return _OPS["floor_divide"](self, other)
        if rounding_mode != "trunc":
            raise ValueError(f"div(): rounding_mode must be None, 'trunc' or 'floor', got {rounding_mode!r}")
        try:
            q = _OPS["floor_divide"](self, other)
        except NotImplementedError:  # bool by bool: torch names its trunc kernel
            raise NotImplementedError('"div_trunc_cpu" not implemented for \'Bool\'') from None
        if not q.dtype.is_floating_point:  # exact for integers: floor, moved up by one where it rounded a negative
            rem = _OPS["remainder"](self, other)
            return q + (rem != 0).to(q.dtype) * (q < 0).to(q.dtype)
        return (self / other).trunc()

    def pow(self, exponent):
        return _OPS["pow"].apply(self, self._operand(exponent))
    neg = __neg__
    abs = __abs__

    # ---- in-place arithmetic (see forgegrad._inplace for the autograd rules) ---------------------------
    def add_(self, other, alpha=1):
        return self._inplace(lambda t, o: t.add(o, alpha), "add_", other)

    def sub_(self, other, alpha=1):
        return self._inplace(lambda t, o: t.sub(o, alpha), "sub_", other)

    def mul_(self, other):
        return self._inplace(lambda t, o: t * o, "mul_", other)

    def div_(self, other, *, rounding_mode=None):
        if rounding_mode is not None:
            return self._inplace(lambda t, o: t.div(o, rounding_mode=rounding_mode), "div_", other)
        return self._inplace(lambda t, o: t / o, "div_", other)

    def pow_(self, exponent):
        return self._inplace(lambda t, o: t ** o, "pow_", exponent)

    def neg_(self):
        return self._inplace(lambda t: -t, "neg_")

    def clamp_(self, min=None, max=None):
        return self._inplace(lambda t: t.clamp(min, max), "clamp_")

    clip_ = clamp_

    def relu_(self):
        return self._inplace(lambda t: t.relu(), "relu_")
    __iadd__, __isub__, __imul__, __itruediv__, __ipow__ = add_, sub_, mul_, div_, pow_

    def __matmul__(self, other):
        if not isinstance(other, TensorMethods):
            other = _stored(other)
        return _OPS["matmul"].apply(self, other)

    def __rmatmul__(self, other):
        return _OPS["matmul"].apply(_stored(other), self)

    matmul = __matmul__

    # ---- comparisons (bool tensors, recorded so that an export sees them) --------------------------
    def _compare(self, other, op):
        if isinstance(other, (list, tuple)):
            other = np.asarray(other)
        return _OPS["compare"](self, other, op=op)

    def __lt__(self, other):
        return self._compare(other, "lt")

    def __le__(self, other):
        return self._compare(other, "le")

    def __gt__(self, other):
        return self._compare(other, "gt")

    def __ge__(self, other):
        return self._compare(other, "ge")

    def __eq__(self, other):
        return self._compare(other, "eq")

    def __ne__(self, other):
        return self._compare(other, "ne")

    lt, le, gt, ge, eq, ne = __lt__, __le__, __gt__, __ge__, __eq__, __ne__
    __hash__ = object.__hash__  # defining __eq__ would otherwise make tensors unhashable

    # ---- elementwise math and activations -------------------------------------------------------------
    def exp(self):
        return _OPS["exp"].apply(self)

    def log(self):
        return _OPS["log"].apply(self)

    def sin(self):
        return _OPS["sin"].apply(self)

    def cos(self):
        return _OPS["cos"].apply(self)

    def sqrt(self):
        return _OPS["sqrt"].apply(self)

    def clamp(self, min=None, max=None):
        return _OPS["clamp"].apply(self, min=min, max=max)

    clip = clamp

    def maximum(self, other):
        """torch.maximum: the elementwise larger of self and the tensor ``other`` (broadcast); a tie splits the
        gradient in half, a NaN propagates."""
        return _OPS["maximum"](self, _other_tensor(other, "maximum"))

    def minimum(self, other):
        return _OPS["minimum"](self, _other_tensor(other, "minimum"))

    def fmax(self, other):
        """torch.fmax: as maximum, but a NaN loses to a number."""
        return _OPS["fmax"](self, _other_tensor(other, "fmax"))

    def fmin(self, other):
        return _OPS["fmin"](self, _other_tensor(other, "fmin"))

    def relu(self):
        return _OPS["relu"].apply(self)

    def sigmoid(self):
        return _OPS["sigmoid"].apply(self)

    def tanh(self):
        return _OPS["tanh"].apply(self)

    def softmax(self, dim=-1, dtype=None):
        if dtype is not None:
            self = _as_dtype(self, dtype, "softmax", True, NotImplementedError)
        return _OPS["softmax"].apply(self, dim=dim)

    def log_softmax(self, dim=-1, dtype=None):
        if dtype is not None:
            self = _as_dtype(self, dtype, "log_softmax", True, NotImplementedError)
        return _OPS["log_softmax"].apply(self, dim=dim)

    # ---- reductions ---------------------------------------------------------------------------------
    def sum(self, dim=None, keepdim=False, *, dtype=None):
        if dtype is None:
            return _OPS["sum"].apply(self, dim=dim, keepdim=keepdim)
        # an integer sum is int64 unless dtype= says otherwise
        return _OPS["sum"].apply(_as_dtype(self, dtype, "sum"), dim=dim, keepdim=keepdim)._cast(dtype)

    def mean(self, dim=None, keepdim=False, *, dtype=None):
        if dtype is not None:
            self = _as_dtype(self, dtype, "mean", True)
        return _OPS["mean"].apply(self, dim=dim, keepdim=keepdim)

    def cumsum(self, dim, *, dtype=None):
        if dtype is not None and dtype == np.bool_:
            raise NotImplementedError("cumsum(): no bool result (dtype=bool), as torch's")
        out = _OPS["cumsum"](_as_dtype(self, dtype, "cumsum"), dim)
        return out if dtype is None else out._cast(dtype)

    def amax(self, dim=None, keepdim=False):
        return _OPS["amax"].apply(self, dim=dim, keepdim=keepdim)

    def amin(self, dim=None, keepdim=False):
        return _OPS["amin"].apply(self, dim=dim, keepdim=keepdim)

    def max(self, dim=None, keepdim=False, *, other=None):
        """max() -> 0-d tensor; max(dim) -> return_types.max(values, indices), torch's named tuple; max(other), a
        tensor (also by keyword, as torch's): torch.maximum."""
        if other is not None or isinstance(dim, TensorMethods):
            return self.maximum(_max_min_other(dim, other, keepdim, "max"))
        if dim is None:
            return _OPS["amax"].apply(self, dim=None, keepdim=False)
        return return_types.max(*_OPS["max_dim"](self, dim, keepdim=keepdim))

    def min(self, dim=None, keepdim=False, *, other=None):
        """min() -> 0-d tensor; min(dim) -> return_types.min(values, indices); min(other): torch.minimum."""
        if other is not None or isinstance(dim, TensorMethods):
            return self.minimum(_max_min_other(dim, other, keepdim, "min"))
        if dim is None:
            return _OPS["amin"].apply(self, dim=None, keepdim=False)
        return return_types.min(*_OPS["min_dim"](self, dim, keepdim=keepdim))

    def argmax(self, dim=None, keepdim=False):
        return _OPS["argmax"].apply(self, dim=dim, keepdim=keepdim)

    def argmin(self, dim=None, keepdim=False):
        return _OPS["argmin"].apply(self, dim=dim, keepdim=keepdim)

    def var(self, dim=None, unbiased=None, keepdim=False, *, correction=None):
        return _corrected(self, "var", dim, unbiased, keepdim, correction)

    def std(self, dim=None, unbiased=None, keepdim=False, *, correction=None):
        return _corrected(self, "std", dim, unbiased, keepdim, correction)

    def norm(self, p="fro", dim=None, keepdim=False, *, dtype=None):
        """torch's ``Tensor.norm``: the vector p-norm over ``dim`` (every element when None; "fro" is p=2), made of
        ops, so that it can be differentiated any number of times (``g.norm(2, dim=1)`` in a gradient penalty).
        The gradient of a 2-norm (or p-norm) of zeros is 0, as torch's, not 0/0. ``dtype`` casts first (torch's)."""
        self = _as_dtype(self, dtype, "norm", True)
        if p == "fro":
            p = 2
        if isinstance(p, (bool, str)) or not isinstance(p, _NUMBER):
            raise ValueError(f"norm: p must be a number or 'fro', got {p!r}")
        a = self.abs()
        if p == float("inf"):
            return a.amax(dim=dim, keepdim=keepdim)
        if p == float("-inf"):
            return a.amin(dim=dim, keepdim=keepdim)
        if p == 0:  # the count of non-zeros: a function of self with a zero gradient, as torch's
            from .ops._double_backward import _flat
            return _flat(self, lambda v: (v != 0).astype(v.dtype)).sum(dim=dim, keepdim=keepdim)
        if p == 1:
            return a.sum(dim=dim, keepdim=keepdim)
        if p != 2:  # a zero's power has no derivative for p < 1 (0 ** (p - 1) is inf): it gets 0, as torch's
            nonzero = a._data > 0
            powers = _OPS["where"](nonzero, _OPS["where"](nonzero, a, 1.0) ** p, 0.0)
        if p < 0:  # a zero makes the norm 0 (its power is inf): there the norm and its gradient are 0, as torch's
            zero = (a == 0)._cast(self._data.dtype).sum(dim=dim, keepdim=keepdim) > 0
            return _OPS["where"](zero, 0.0, _OPS["where"](zero, 1.0, powers.sum(dim=dim, keepdim=keepdim)) ** (1.0 / p))
        sq = a * a if self._data.dtype.kind == "c" else self * self  # (|z|^2 of a complex tensor)
        s = (sq if p == 2 else powers).sum(dim=dim, keepdim=keepdim)
        pos = s != 0  # the root only where it has a derivative; zeros get 0 and a zero gradient (NaN stays NaN)
        safe = _OPS["where"](pos, s, 1.0)
        return _OPS["where"](pos, safe.sqrt() if p == 2 else safe ** (1.0 / p), 0.0)

    # ---- shapes ---------------------------------------------------------------------------------------
    def reshape(self, *args, shape=None):
        return _OPS["reshape"].apply(self, _args_or_keyword(args, shape, "shape", "reshape"))

    def view(self, *args, size=None, dtype=None):
        """view(*shape), view(size=shape), or view(dtype): the same bytes read as another dtype (torch's; see
        _torch_named_args.view_dtype)."""
        if dtype is not None or len(args) == 1 and type(args[0]) not in (int, tuple, list):  # (a shape: no dtype)
            from ._torch_named_args import is_dtype, view_dtype
            if dtype is not None or is_dtype(args[0]):
                if args and dtype is not None or size is not None:
                    raise TypeError("view(): give a shape or a dtype, not both")
                return view_dtype(self, args[0] if args else dtype)
        return _OPS["reshape"].apply(self, _args_or_keyword(args, size, "size", "view"))

    def permute(self, *args, dims=None):
        return _OPS["permute"].apply(self, _args_or_keyword(args, dims, "dims", "permute"))

    def transpose(self, dim0, dim1):
        nd = self.ndim
        d0, d1 = single_axis(dim0, nd, "dim0"), single_axis(dim1, nd, "dim1")
        dims = list(range(nd))
        if nd:
            dims[d0], dims[d1] = dims[d1], dims[d0]
        return _OPS["permute"].apply(self, tuple(dims))

    def t(self):
        return self.transpose(0, 1) if self.ndim == 2 else self

    @property
    def T(self):
        return self.permute(*reversed(range(self.ndim)))

    def expand(self, *args, size=None):
        return _OPS["expand"].apply(self, _args_or_keyword(args, size, "size", "expand"))

    def repeat(self, *args, repeats=None):
        """torch's ``Tensor.repeat``: the tensor tiled ``sizes[i]`` times along dim i; more sizes than dims
        add leading dims (``x.repeat(2, 1, 1)`` of a (3, 4) tensor is (2, 3, 4)). Made of reshape and expand,
        so its gradient (each tile's gradient summed back) has every derivative order and an ONNX export."""
        sizes = _args_or_keyword(args, repeats, "repeats", "repeat")
        if not all(isinstance(n, (int, np.integer)) and not isinstance(n, bool) for n in sizes):
            raise TypeError(f"repeat: sizes must be ints, got {sizes!r}")
        if len(sizes) < self.ndim:
            raise ValueError(f"repeat: the number of sizes ({len(sizes)}) can not be smaller than the tensor's "
                             f"number of dimensions ({self.ndim})")
        if any(n < 0 for n in sizes):
            raise ValueError(f"repeat: sizes must be non-negative, got {tuple(sizes)}")
        shape = (1,) * (len(sizes) - self.ndim) + self.shape
        x = self.reshape(tuple(d for s in shape for d in (1, s)))  # a 1 before each dim, then stretched there
        x = x.expand(tuple(d for n, s in zip(sizes, shape) for d in (int(n), s)))
        return x.reshape(tuple(int(n) * s for n, s in zip(sizes, shape)))

    def tile(self, *args, dims=None):
        """torch's ``tile``: ``repeat`` where fewer ``dims`` than the tensor's dims are padded with leading 1s."""
        dims = _args_or_keyword(args, dims, "dims", "tile")
        return self.repeat((1,) * (self.ndim - len(dims)) + tuple(dims))

    # Dims are checked like torch's: out of range raises IndexError (never wraps around).
    def flatten(self, start_dim=0, end_dim=-1):
        s = single_axis(start_dim, self.ndim, "start_dim")
        e = single_axis(end_dim, self.ndim, "end_dim")
        if self.ndim == 0:
            return self.reshape(1)
        if s > e:
            raise RuntimeError("flatten() has invalid args: start_dim cannot come after end_dim")
        return self.reshape(self.shape[:s] + (-1,) + self.shape[e + 1:])

    def squeeze(self, dim=None):
        if dim is None:
            return self.reshape(tuple(s for s in self.shape if s != 1))
        axes = normalize_axis(dim, self.ndim)
        if self.ndim == 0:
            return self
        keep = tuple(s for i, s in enumerate(self.shape) if not (i in axes and s == 1))
        return self if keep == self.shape else self.reshape(keep)

    def unsqueeze(self, dim):
        d = single_axis(dim, self.ndim + 1)
        return self.reshape(self.shape[:d] + (1,) + self.shape[d:])

    def view_as(self, other):
        return self.reshape(other.shape)

    reshape_as = view_as

    def expand_as(self, other):
        return self.expand(other.shape)

    def contiguous(self, memory_format=None):
        """This tensor if its elements are in row-major order (is_contiguous()), else a row-major copy (clone, so
        the gradient flows), as torch's: code that hands data_ptr() or the buffer on relies on the layout."""
        flags = getattr(self._data, "flags", None)
        if flags is None or type(self._data) is not np.ndarray or flags["C_CONTIGUOUS"]:
            return self
        return self.clone()

    def narrow(self, dim, start, length):
        d = single_axis(dim, self.ndim)
        size = self.shape[d]
        start = start + size if start < 0 else start
        if not 0 <= start <= size or length < 0 or start + length > size:
            raise IndexError(f"narrow: start ({start}) + length ({length}) exceeds dimension size ({size})")
        return self[(slice(None),) * d + (slice(start, start + length),)]

    def split(self, split_size=None, dim=0, *, split_size_or_sections=None):
        """Pieces of ``split_size`` along dim (the last may be smaller), or of the given sizes (torch's name is
        ``split_size``; forgegrad's ``split_size_or_sections``, torch.split's, is taken too)."""
        if split_size_or_sections is not None:
            if split_size is not None:
                raise TypeError("split() got split_size and split_size_or_sections: give one")
            split_size = split_size_or_sections
        if split_size is None:
            raise TypeError("split() missing 1 required argument: 'split_size'")
        split_size_or_sections = split_size
        d = single_axis(dim, self.ndim)
        size = self.shape[d]
        if isinstance(split_size_or_sections, (int, np.integer)):
            step = int(split_size_or_sections)
            if step <= 0 and size:
                raise ValueError(f"split: split_size must be positive, got {step}")
            sizes = [min(step, size - i) for i in range(0, size, step)] if size else [0]
        else:
            sizes = [int(n) for n in split_size_or_sections]
            if sum(sizes) != size or any(n < 0 for n in sizes):
                raise RuntimeError(f"split: sizes {sizes} must be non-negative and sum to dimension {d}'s size "
                                   f"({size})")
        out, at = [], 0
        for n in sizes:
            out.append(self[(slice(None),) * d + (slice(at, at + n),)])
            at += n
        return tuple(out)

    def chunk(self, chunks, dim=0):
        if chunks <= 0:
            raise RuntimeError(f"chunk: chunks must be positive, got {chunks}")
        size = self.shape[single_axis(dim, self.ndim)]
        return self.split(max(-(-size // chunks), 1), dim)

    def unbind(self, dim=0):
        d = single_axis(dim, self.ndim)
        return tuple(self[(slice(None),) * d + (i,)] for i in range(self.shape[d]))

    # ---- new tensors like this one (dtype and device) ----------------------------------------------
    # ``device``: this tensor's unless given (torch's)
    def new_zeros(self, *args, size=None, dtype=None, device=None, requires_grad=False):
        return self._new(np.zeros, _args_or_keyword(args, size, "size", "new_zeros"), dtype, requires_grad, device)

    def new_ones(self, *args, size=None, dtype=None, device=None, requires_grad=False):
        return self._new(np.ones, _args_or_keyword(args, size, "size", "new_ones"), dtype, requires_grad, device)

    def new_empty(self, *args, size=None, dtype=None, device=None, requires_grad=False):
        return self._new(np.empty, _args_or_keyword(args, size, "size", "new_empty"), dtype, requires_grad, device)

    def new_full(self, size, fill_value, dtype=None, device=None, requires_grad=False):
        return self._new(lambda shape, dtype: np.full(shape, fill_value, dtype), (size,), dtype, requires_grad,
                         device)

    def new_tensor(self, data, dtype=None, device=None, requires_grad=False):
        arr = np.array(data.cpu().numpy() if isinstance(data, TensorMethods) else data,
                       dtype=self._data.dtype if dtype is None else _np_dtype(dtype))
        from .factories import placed
        from .tensor import Tensor  # a plain Tensor, also for a Parameter (as torch), on this device
        return placed(Tensor(arr, requires_grad=requires_grad, dtype=arr.dtype), self.device if device is None
                      else device)

    def _new(self, make, size, dtype, requires_grad, device=None):
        from .factories import _factory
        shape = tuple(int(n) for n in _shape_args(size))
        dt = self._data.dtype if dtype is None else _np_dtype(dtype)
        return _factory(self.device if device is None else device, shape, dt, lambda: make(shape, dtype=dt),
                        requires_grad)

    @property
    def is_cuda(self) -> bool:
        return self.device.type == "cuda"

    def clone(self):
        return _OPS["clone"].apply(self)

    def __getitem__(self, key):
        return _OPS["getitem"].apply(self, key)

    def __setitem__(self, key, value):
        if self._is_inference:  # refused outside inference mode, before anything is written
            from ._inference_tensors import check_inplace
            check_inplace(self)
        # an in-place write is no op of a trace, so an exporter would silently leave it out of the graph
        if grad_mode.recorder() is not None:
            raise RuntimeError(
                f"in-place assignment t[key] = value (on a tensor of shape {tuple(self.shape)}) ran inside "
                "forgegrad.autograd.trace(): in-place writes are not recorded, so the traced graph (and an "
                "ONNX export) would leave it out. Build the value out of place instead, e.g. "
                "forgegrad.where(mask, value, t) or forgegrad.cat([...])")
        if self.requires_grad and grad_mode.records_graph():
            from ._inplace import VIEW_OF_LEAF_MESSAGE, _views_a_leaf
            if self.is_leaf or _views_a_leaf(self):  # torch's words: t[key] = value writes into a view of t
                raise RuntimeError(VIEW_OF_LEAF_MESSAGE)
        if not isinstance(self._data, np.ndarray):
            raise NotImplementedError(
                f"t[key] = value on a {self.device.type} tensor: indexed in-place writes run on the CPU only; build "
                "the value out of place instead (forgegrad.where(mask, value, t), forgegrad.cat([...]))")
        from ._inplace import check_writeable, write_values
        from ._setitem import assign, setitem_tracked
        from .ops.shape import _index_arrays
        if not self._data.flags.writeable:
            check_writeable(self, "t[key] = value")
        if grad_mode.records_graph() and (self.requires_grad or getattr(value, "requires_grad", False)):
            setitem_tracked(self, _index_arrays(key), value)  # recorded as torch records it: an in-place op
            return
        if self._ctx is None and getattr(self, "_view_of", None) is not None and grad_mode.records_graph():
            from ._view_rebase import view_target
            view_target(self)  # refuses a view of a leaf that has required grad since the view was made, as torch
        if self._data.flags.writeable:
            assign(self._data, _index_arrays(key), value._data if isinstance(value, TensorMethods) else value)
        else:  # a slice of an expanded view (numpy makes it read-only): its values written through the storage
            from ._setitem import _basic_key
            key, v = _index_arrays(key), value._data if isinstance(value, TensorMethods) else value
            if _basic_key(key):  # (torch copies into the view self[key], whose elements may be distinct)
                target = self._data[(key if type(key) is tuple else (key,)) + (Ellipsis,)]  # a view, 0-d too
                values = np.empty(np.shape(target), self._data.dtype)
                assign(values, (), v)
            else:
                target = self._data
                values = self._data.copy()
                assign(values, key, v)
            write_values(target, values)
        _vc.bump(self)  # one in-place write: a graph that saved this storage refuses it at backward


# what an operator takes as it is: tensors and numbers (anything else is made a tensor)
_OPERAND = (TensorMethods, *_NUMBER)
