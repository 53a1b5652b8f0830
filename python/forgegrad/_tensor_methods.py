"""Operators and methods of forgegrad.Tensor, each a thin call into one op (forgegrad/ops/)."""
from __future__ import annotations

import numpy as np

from . import autograd
from .ops import activation as A
from .ops import compare as C
from .ops import elementwise as E
from .ops import linalg as L
from .ops import reduce as R
from .ops import shape as S
from .ops import stats as ST
from .tensor import Tensor


def _operand(x):
    """Scalars stay Python scalars (float32 results); arrays/lists become tensors."""
    if isinstance(x, Tensor) or isinstance(x, (int, float, bool, np.number)):
        return x
    return Tensor(x)


def _binary(fn):
    def op(self, other):
        return fn.apply(self, _operand(other))
    return op


def _rbinary(fn):
    def op(self, other):
        return fn.apply(_operand(other), self)
    return op


Tensor.__add__ = _binary(E.Add)
Tensor.__radd__ = _rbinary(E.Add)
Tensor.__sub__ = _binary(E.Sub)
Tensor.__rsub__ = _rbinary(E.Sub)
Tensor.__mul__ = _binary(E.Mul)
Tensor.__rmul__ = _rbinary(E.Mul)
Tensor.__truediv__ = _binary(E.Div)
Tensor.__rtruediv__ = _rbinary(E.Div)
Tensor.__pow__ = _binary(E.Pow)
Tensor.__rpow__ = _rbinary(E.Pow)
Tensor.__neg__ = lambda self: E.Neg.apply(self)
Tensor.__pos__ = lambda self: self


def _matmul(self, other):
    if not isinstance(other, Tensor):
        other = Tensor(other)
    return L.MatMul.apply(self, other)


def _rmatmul(self, other):
    return L.MatMul.apply(Tensor(other), self)


Tensor.__matmul__ = _matmul
Tensor.__rmatmul__ = _rmatmul
Tensor.matmul = _matmul


def _cmp(op_name):
    def op(self, other):
        if isinstance(other, (list, tuple)):
            other = np.asarray(other)
        return C.Compare.apply(self, other, op=op_name)
    op.__name__ = op_name
    return op


Tensor.__lt__ = Tensor.lt = _cmp("lt")
Tensor.__le__ = Tensor.le = _cmp("le")
Tensor.__gt__ = Tensor.gt = _cmp("gt")
Tensor.__ge__ = Tensor.ge = _cmp("ge")
Tensor.__eq__ = Tensor.eq = _cmp("eq")
Tensor.__ne__ = Tensor.ne = _cmp("ne")

# ---- elementwise math ----------------------------------------------------------------------
Tensor.add = _binary(E.Add)
Tensor.sub = _binary(E.Sub)
Tensor.mul = _binary(E.Mul)
Tensor.div = _binary(E.Div)
Tensor.pow = _binary(E.Pow)
Tensor.neg = lambda self: E.Neg.apply(self)
Tensor.exp = lambda self: E.Exp.apply(self)
Tensor.log = lambda self: E.Log.apply(self)
Tensor.sqrt = lambda self: E.Sqrt.apply(self)
Tensor.abs = lambda self: E.Abs.apply(self)
Tensor.__abs__ = Tensor.abs
Tensor.clamp = lambda self, min=None, max=None: E.Clamp.apply(self, min=min, max=max)
Tensor.clip = Tensor.clamp
Tensor.relu = lambda self: A.Relu.apply(self)
Tensor.sigmoid = lambda self: A.Sigmoid.apply(self)
Tensor.tanh = lambda self: A.Tanh.apply(self)
Tensor.softmax = lambda self, dim=-1: A.Softmax.apply(self, dim=dim)
Tensor.log_softmax = lambda self, dim=-1: A.LogSoftmax.apply(self, dim=dim)

# ---- reductions ------------------------------------------------------------------------------
Tensor.sum = lambda self, dim=None, keepdim=False: R.Sum.apply(self, dim=dim, keepdim=keepdim)
Tensor.mean = lambda self, dim=None, keepdim=False: R.Mean.apply(self, dim=dim, keepdim=keepdim)
Tensor.amax = lambda self, dim=None, keepdim=False: R.Amax.apply(self, dim=dim, keepdim=keepdim)
Tensor.amin = lambda self, dim=None, keepdim=False: R.Amin.apply(self, dim=dim, keepdim=keepdim)


def _max(self, dim=None, keepdim=False):
    """max() -> scalar tensor; max(dim) -> (values, indices) as in torch."""
    if dim is None:
        return R.Amax.apply(self, dim=None, keepdim=False)
    return R.MaxDim.apply(self, dim, keepdim=keepdim)


def _min(self, dim=None, keepdim=False):
    if dim is None:
        return R.Amin.apply(self, dim=None, keepdim=False)
    return R.MinDim.apply(self, dim, keepdim=keepdim)


Tensor.max = _max
Tensor.min = _min
Tensor.argmax = lambda self, dim=None, keepdim=False: C.ArgMax.apply(self, dim=dim, keepdim=keepdim)
Tensor.argmin = lambda self, dim=None, keepdim=False: C.ArgMin.apply(self, dim=dim, keepdim=keepdim)


def _var(self, dim=None, unbiased=True, keepdim=False):
    return ST.Var.apply(self, dim=dim, unbiased=unbiased, keepdim=keepdim)


Tensor.var = _var
Tensor.std = lambda self, dim=None, unbiased=True, keepdim=False: _var(self, dim, unbiased, keepdim).sqrt()

# ---- shapes ----------------------------------------------------------------------------------


def _shape_args(shape):
    if len(shape) == 1 and isinstance(shape[0], (tuple, list)):
        return tuple(shape[0])
    return tuple(shape)


Tensor.reshape = lambda self, *shape: S.Reshape.apply(self, _shape_args(shape))
Tensor.view = Tensor.reshape
Tensor.permute = lambda self, *dims: S.Permute.apply(self, _shape_args(dims))


def _transpose(self, dim0=0, dim1=1):
    dims = list(range(self.ndim))
    dims[dim0], dims[dim1] = dims[dim1], dims[dim0]
    return S.Permute.apply(self, tuple(dims))


Tensor.transpose = _transpose
Tensor.t = lambda self: _transpose(self, 0, 1) if self.ndim == 2 else self
Tensor.expand = lambda self, *shape: S.Expand.apply(self, _shape_args(shape))


def _flatten(self, start_dim=0, end_dim=-1):
    if self.ndim == 0:
        return self.reshape(1)
    s = start_dim % self.ndim
    e = end_dim % self.ndim
    shape = self.shape[:s] + (-1,) + self.shape[e + 1:]
    return self.reshape(shape)


def _squeeze(self, dim=None):
    if dim is None:
        return self.reshape(tuple(s for s in self.shape if s != 1))
    d = dim % max(self.ndim, 1)
    if self.ndim == 0 or self.shape[d] != 1:
        return self
    return self.reshape(self.shape[:d] + self.shape[d + 1:])


def _unsqueeze(self, dim):
    d = dim % (self.ndim + 1)
    return self.reshape(self.shape[:d] + (1,) + self.shape[d:])


Tensor.flatten = _flatten
Tensor.squeeze = _squeeze
Tensor.unsqueeze = _unsqueeze


def _getitem(self, key):
    return S.GetItem.apply(self, key)


Tensor.__getitem__ = _getitem


def _setitem(self, key, value):
    # autograd.trace() keeps its recorder in this thread's state; an in-place write is no op of the
    # trace, so the exporter would silently leave it out of the graph
    if autograd._state.__dict__.get("recorder") is not None:
        raise RuntimeError(
            f"in-place assignment t[key] = value (on a tensor of shape {tuple(self.shape)}) ran inside "
            "forgegrad.autograd.trace(): in-place writes are not recorded, so the traced graph (and an "
            "ONNX export) would leave it out. Build the value out of place instead, e.g. "
            "forgegrad.where(mask, value, t) or forgegrad.cat([...])")
    if self.requires_grad and self.is_leaf and autograd.is_grad_enabled():
        raise RuntimeError("a leaf Variable that requires grad is being used in an in-place operation")
    from .ops.shape import _index_arrays
    self.data[_index_arrays(key)] = value.data if isinstance(value, Tensor) else value


Tensor.__setitem__ = _setitem
