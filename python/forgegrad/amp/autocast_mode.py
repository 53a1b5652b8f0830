"""torch.autocast for the CPU: ``with forgegrad.autocast("cpu"):`` (dtype bfloat16 by default, float16 too) runs
torch's CPU autocast policy over forgegrad's ops.

- lower-precision ops (LOWER_PRECISION: linear, matmul, the convolutions, prelu, scaled_dot_product_attention; and
  addmm / baddbmm / addbmm, which call ``lower_precision_args``) cast their floating inputs to the autocast dtype and
  give it;
- float32 ops (FLOAT32: the losses, the 3-d poolings, prod, quantile, cdist, grid_sample, linalg) cast their
  low-precision inputs to float32 and give float32;
- every other op follows the promotion of the dtypes it gets (a bfloat16 activation stays bfloat16; bfloat16 with a
  float32 tensor gives float32).

float64 tensors are never cast, and neither is a call given an explicit dtype (as torch's). The casts are recorded
ops, so a float32 parameter gets its gradient in float32. With ``cache_enabled`` the cast of a float32 leaf that
requires grad (a parameter) is made once per outermost autocast region, as torch's cast cache.

How: while any thread has an autocast region open, Function.apply's hook (autograd._batch_hook, the slot
forgegrad.func's batched vmap uses; when one is installed the other waits) sends the ops of the two lists here; the
state is thread-local, so other threads run as before. Layers' inference fast paths (grad_mode.graph_free) are off
inside an enabled region. Nothing here runs while no region is open: the float32 hot path is unchanged.
"""
from __future__ import annotations

import functools
import threading
import warnings

import numpy as np

from .. import autograd as _autograd
from .. import dtypes as _dtypes
from ..grad_mode import _state as _grad_state
from ..tensor import Tensor

__all__ = ["autocast", "is_autocast_enabled", "get_autocast_dtype", "set_autocast_enabled", "set_autocast_dtype",
           "is_autocast_available", "lower_precision_args", "outside_policy", "LOWER_PRECISION", "FLOAT32"]

# torch 2.13's CPU lists (docs: "CPU Ops that can autocast to bfloat16" / "... to float32"), as forgegrad's op names
LOWER_PRECISION = frozenset({"linear", "matmul", "conv1d", "conv2d", "conv3d", "conv_transpose1d", "conv_transpose2d",
                             "conv_transpose3d", "prelu", "scaled_dot_product_attention"})
FLOAT32 = frozenset({
    "avg_pool3d", "max_pool3d", "adaptive_avg_pool3d", "adaptive_max_pool3d", "max_unpool2d", "max_unpool3d",
    "binary_cross_entropy", "binary_cross_entropy_with_logits", "cross_entropy", "nll_loss", "mse_loss", "l1_loss",
    "smooth_l1_loss", "huber_loss", "kl_div", "poisson_nll_loss", "hinge_embedding_loss", "cosine_embedding_loss",
    "margin_ranking_loss", "soft_margin_loss", "triplet_margin_loss", "multi_margin_loss", "multilabel_margin_loss",
    "ctc_loss", "grid_sample", "prod", "quantile", "nanquantile", "cdist", "cholesky_solve", "linalg_cholesky",
    "linalg_det", "linalg_eigh", "linalg_inv", "linalg_lu_factor", "linalg_matrix_exp", "linalg_qr", "linalg_slogdet",
    "linalg_solve", "linalg_solve_triangular", "linalg_svd"})

_F32 = np.dtype(np.float32)
_F64 = np.dtype(np.float64)


class _ThreadState(threading.local):
    def __init__(self):
        self.enabled = False
        self.dtype = None  # the numpy dtype ops are lowered to (None: bfloat16, made on first use)
        self.cache_enabled = True
        self.depth = 0  # autocast regions open in this thread, enabled or not (the cache lives to the outermost's end)
        self.busy = False  # an op autocast took runs: the ops inside it are its own
        self.cache = {}


_local = _ThreadState()
_lock = threading.Lock()
_open = [0]  # enabled regions open over all threads: the apply hook is installed while there are any


def _lower_dtype():
    if _local.dtype is None:
        _local.dtype = _dtypes.load_bfloat16().dtype
    return _local.dtype


def _cast(a, target, st):
    """``a`` in ``target`` where autocast casts it: a floating tensor that is not float64 (recorded, so gradients
    flow back in its own dtype); a float32 leaf that requires grad once per region when the cache is on."""
    if not isinstance(a, Tensor):
        if type(a) in (list, tuple):  # (cat-like ops take sequences of tensors)
            return type(a)(_cast(v, target, st) for v in a)
        return a
    d = a._data.dtype
    if d == target or d == _F64 or not _dtypes.is_floating(d):
        return a
    if st.cache_enabled and target != _F32 and d == _F32 and a.requires_grad and a._ctx is None:
        key = id(a)
        hit = st.cache.get(key)
        if hit is not None and hit[0] is a:
            return hit[1]
        out = a._cast(target)
        st.cache[key] = (a, out)
        return out
    return a._cast(target)  # (the recorded cast op, as a.to(dtype) makes it)


def _explicit_dtype(args, kwargs) -> bool:
    """A call given a result dtype (prod(x, dtype=...)): not autocast, as torch's."""
    for v in (*args, *kwargs.values()):
        if isinstance(v, (_dtypes.dtype, np.dtype, type)):
            return True
    return False


def _apply_hook(cls, args, kwargs):
    """Function.apply's hook while an autocast region is open somewhere: the ops of this thread's enabled region
    that the policy casts; NotImplemented lets apply go on as usual."""
    st = _local
    if not st.enabled or st.busy or cls.op is None:
        return NotImplemented
    name = cls.op.name
    if name in LOWER_PRECISION:
        target = _lower_dtype()
    elif name in FLOAT32:
        target = _F32
    else:
        return NotImplemented
    if _explicit_dtype(args, kwargs):
        return NotImplemented
    st.busy = True
    try:
        args = [_cast(a, target, st) for a in args]
        kwargs = {k: _cast(v, target, st) for k, v in kwargs.items()}
        return cls.apply(*args, **kwargs)
    finally:
        st.busy = False


def lower_precision_args(*tensors):
    """``tensors`` cast as autocast's lower-precision ops cast theirs (for Python-level ops made of several
    registered ones, e.g. addmm = input + mat1 @ mat2, whose result torch gives in the autocast dtype); as they are
    outside an enabled region."""
    st = _local
    if not st.enabled or st.busy:
        return tensors
    target = _lower_dtype()
    return tuple(_cast(t, target, st) for t in tensors)


class outside_policy:
    """Context: the ops inside run as outside autocast (for a Python-level op torch does not autocast that is made
    of one it does: mv is a matmul here, and torch keeps mv in its inputs' dtype)."""

    def __enter__(self):
        self.prev, _local.busy = _local.busy, True

    def __exit__(self, *exc):
        _local.busy = self.prev
        return False


def _install_hook() -> None:
    with _lock:
        _open[0] += 1
        if _autograd._batch_hook is None:
            _autograd._batch_hook = _apply_hook


def _remove_hook() -> None:
    with _lock:
        _open[0] -= 1
        if _open[0] == 0 and _autograd._batch_hook is _apply_hook:
            _autograd._batch_hook = None


def _device_type(device_type, who: str) -> str:
    if not isinstance(device_type, str):
        raise TypeError(f"{who}: device_type must be a str such as 'cpu', got {type(device_type).__name__}")
    if device_type not in ("cpu", "cuda"):
        raise ValueError(f"{who}: device_type must be 'cpu' (or 'cuda'), got {device_type!r}")
    return device_type


class autocast:
    """torch.autocast(device_type, dtype=None, enabled=True, cache_enabled=None): inside it, ops run in mixed
    precision by torch's CPU policy (see the module docstring). A context manager and a decorator; nestable (an inner
    ``autocast(enabled=False)`` turns it off for its body); thread-local.

    Args:
        device_type: "cpu" (forgegrad autocasts CPU ops only; "cuda" raises NotImplementedError).
        dtype: the lower-precision dtype: forgegrad.bfloat16 (the default) or forgegrad.float16, as torch's CPU
            autocast; any other dtype warns and disables autocast for the region, as torch's.
        enabled: False: the region runs without autocast (also inside an enabled one).
        cache_enabled: cache the casts of parameters within the region (default True).
    """

    def __init__(self, device_type: str = "cpu", dtype=None, enabled: bool = True, cache_enabled=None):
        self.device = _device_type(device_type, "autocast")
        if not isinstance(enabled, bool):
            raise TypeError(f"autocast: enabled must be a bool, got {type(enabled).__name__}")
        if cache_enabled is not None and not isinstance(cache_enabled, bool):
            raise TypeError(f"autocast: cache_enabled must be a bool or None, got {type(cache_enabled).__name__}")
        if self.device == "cuda":
            raise NotImplementedError("autocast: forgegrad autocasts CPU ops only; use device_type='cpu'")
        self.fast_dtype = _dtypes.load_bfloat16() if dtype is None else _dtypes.of(dtype)
        self._enabled = enabled
        if enabled and not _dtypes.is_low_precision(self.fast_dtype.dtype):
            warnings.warn("In CPU autocast, but the target dtype is not supported. Disabling autocast.\n"
                          "CPU Autocast only supports dtypes of forgegrad.bfloat16, forgegrad.float16 currently.",
                          UserWarning, stacklevel=2)
            self._enabled = False
        self._cache_enabled = True if cache_enabled is None else cache_enabled

    def __enter__(self):
        st = _local
        self._prev = (st.enabled, st.dtype, st.cache_enabled)
        st.enabled, st.dtype, st.cache_enabled = self._enabled, self.fast_dtype.dtype, self._cache_enabled
        st.depth += 1
        _grad_state.autocast = st.enabled  # grad_mode.graph_free: no layer fast path skips the policy
        if self._enabled:
            _install_hook()
        return self

    def __exit__(self, *exc):
        st = _local
        st.enabled, st.dtype, st.cache_enabled = self._prev
        st.depth -= 1
        if st.depth == 0:
            st.cache.clear()  # torch clears its cast cache on leaving the outermost region
        _grad_state.autocast = st.enabled
        if self._enabled:
            _remove_hook()
        return False

    def __call__(self, fn):
        @functools.wraps(fn)
        def run(*args, **kwargs):
            with autocast(self.device, self.fast_dtype, self._enabled, self._cache_enabled):
                return fn(*args, **kwargs)
        return run


def is_autocast_enabled(device_type=None) -> bool:
    """torch.is_autocast_enabled(device_type=None): whether ops autocast in this thread on that device; without a
    device_type torch answers for CUDA, where forgegrad never autocasts (False)."""
    if device_type is None:
        return False
    return _device_type(device_type, "is_autocast_enabled") == "cpu" and _local.enabled


def get_autocast_dtype(device_type: str):
    """torch.get_autocast_dtype(device_type): the dtype the current (or next) region lowers to (bfloat16 by
    default on the CPU)."""
    _device_type(device_type, "get_autocast_dtype")
    return _dtypes.of(_lower_dtype()) if device_type == "cpu" else _dtypes.float16


def set_autocast_enabled(device_type: str, enabled: bool) -> None:
    """torch.set_autocast_enabled(device_type, enabled) (what autocast's __enter__ does, without the region)."""
    if _device_type(device_type, "set_autocast_enabled") != "cpu":
        raise NotImplementedError("set_autocast_enabled: forgegrad autocasts CPU ops only")
    enabled = bool(enabled)
    if enabled != _local.enabled:
        (_install_hook if enabled else _remove_hook)()
    _local.enabled = enabled
    _grad_state.autocast = enabled


def set_autocast_dtype(device_type: str, dtype) -> None:
    if _device_type(device_type, "set_autocast_dtype") != "cpu":
        raise NotImplementedError("set_autocast_dtype: forgegrad autocasts CPU ops only")
    _local.dtype = _dtypes.of(dtype).dtype


def is_autocast_available(device_type: str) -> bool:
    """torch.amp.is_autocast_available: True for the CPU."""
    return _device_type(device_type, "is_autocast_available") == "cpu"
