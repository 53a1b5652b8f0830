"""forgegrad.cuda: the CUDA runtime (devices, memory, streams) and kernels on device arrays.

``DeviceArray`` (``_C.cuda.DeviceArray``) is a contiguous row-major array in GPU memory: float32,
float64, int64, int32, uint8 or bool, on one device, its memory a block of that device's caching
allocator. It is the storage of tensors on the ``cuda`` device. Kernels are queued on one stream
per device without synchronising; copies to the host and :func:`synchronize` wait for it, and an
asynchronous fault surfaces there as a RuntimeError naming the call (set
``FORGEGRAD_CUDA_LAUNCH_BLOCKING=1`` to synchronise after every launch, so the error names the
kernel). A full device raises :class:`OutOfMemoryError` (a ``MemoryError``) naming the request.
Without a device every entry point but the queries (is_built, is_available, device_count,
unavailable_reason) raises a clear RuntimeError. See docs/cuda.md. Ran on an H200: tests/test_cuda*.py pass.
"""
from __future__ import annotations

import math
import numpy as np

from . import _C

__all__ = ["is_built", "is_available", "device_count", "unavailable_reason", "synchronize", "current_device",
           "set_device", "memory_allocated", "max_memory_allocated", "memory_reserved", "max_memory_reserved",
           "memory_stats", "reset_peak_memory_stats", "empty_cache", "OutOfMemoryError", "empty", "zeros", "full",
           "to_device", "to_host", "DTYPES", "parse_device", "as_strided", "as_strided_assign",
           "permute", "expand", "sum_to_shape",
           "basic_index", "getitem", "setitem", "cat", "split", "clone", "cast", "matmul", "relu", "relu_backward",
           "adam_step"]

# Raised when a device is full even after its cache was emptied: a MemoryError subclass.
OutOfMemoryError = _C.allocator.OutOfMemoryError

# The dtypes a DeviceArray holds.
DTYPES = tuple(np.dtype(t) for t in (np.float32, np.float64, np.int64, np.int32, np.uint8, np.bool_))

# Whether float32 matmul / linear on the GPU may use TF32 tensor cores (inputs rounded to a 10-bit
# mantissa, FP32 accumulation), as torch.backends.cuda.matmul.allow_tf32. Off: FP32 FMAs, within FP32
# rounding of the CPU. Read at each call (ops/linalg.py); convolutions always use FP32.
matmul_allow_tf32 = False


def is_built() -> bool:
    """Whether this installation was compiled with the CUDA kernels (nvcc was found at build time)."""
    return bool(_C.cuda.built)


def device_count() -> int:
    return int(_C.cuda.device_count())


def is_available() -> bool:
    return is_built() and device_count() > 0


def unavailable_reason() -> str:
    return "" if is_available() else _C.cuda.unavailable_reason()


def _require():
    if not is_available():
        raise RuntimeError(f"CUDA is not available: {unavailable_reason()}")


def parse_device(device) -> int:
    """The device index named by None (-1: the current device), an int >= 0, "cuda", "cuda:N" or an
    object with ``type`` "cuda" (and an optional ``index``); ValueError for anything else."""
    if device is None:
        return -1
    if isinstance(device, (int, np.integer)) and not isinstance(device, (bool, np.bool_)):
        index = int(device)
    else:
        name = device if isinstance(device, str) else getattr(device, "type", None)
        if not isinstance(name, str) or not (name == "cuda" or name.startswith("cuda:")):
            raise ValueError(f"device must be None, an index, 'cuda' or 'cuda:N', got {device!r}")
        if ":" not in name:
            index = None if isinstance(device, str) else getattr(device, "index", None)
            return -1 if index is None else parse_device(index)
        try:
            index = int(name.split(":", 1)[1])
        except ValueError:
            raise ValueError(f"device {device!r}: expected 'cuda' or 'cuda:N'") from None
    if index < 0:
        raise ValueError(f"device index must be >= 0, got {index} (from {device!r})")
    return index


def _index(device) -> int:
    """parse_device after the availability check (the clear error comes first)."""
    _require()
    return parse_device(device)


def synchronize(device=None) -> None:
    """Wait for all queued work on the device; an asynchronous kernel fault raises RuntimeError here."""
    i = _index(device)
    _C.cuda.synchronize(i)


def current_device() -> int:
    _require()
    return int(_C.cuda.current_device())


def set_device(device) -> None:
    """Make ``device`` the current device of the calling thread (new arrays go there by default)."""
    i = _index(device)
    if i >= 0:
        _C.cuda.set_device(i)


def memory_stats(device=None) -> dict:
    """The caching allocator's counters (bytes allocated/reserved, peaks, raw allocations, ...)."""
    i = _index(device)
    return dict(_C.cuda.memory_stats(i))


def memory_allocated(device=None) -> int:
    """Bytes in blocks handed out to live arrays (block sizes: requests round up to 512 bytes)."""
    return memory_stats(device)["allocated"]


def max_memory_allocated(device=None) -> int:
    return memory_stats(device)["peak_allocated"]


def memory_reserved(device=None) -> int:
    """Bytes held from cudaMalloc by the caching allocator (live blocks and the cache)."""
    return memory_stats(device)["reserved"]


def max_memory_reserved(device=None) -> int:
    return memory_stats(device)["peak_reserved"]


def reset_peak_memory_stats(device=None) -> None:
    i = _index(device)
    _C.cuda.reset_peak_memory_stats(i)


def empty_cache(device=None) -> None:
    """Return the cached, unused memory of the device to the driver (cudaFree)."""
    i = _index(device)
    _C.cuda.empty_cache(i)


# ---- device arrays ------------------------------------------------------------------------------
def _shape(shape) -> list:
    if isinstance(shape, (int, np.integer)):
        return [int(shape)]
    return [int(s) for s in shape]


def empty(shape, dtype=np.float32, device=None):
    """A new uninitialised DeviceArray."""
    i = _index(device)  # before the _C.cuda lookup: a CPU-only build has no DeviceArray
    return _C.cuda.DeviceArray(_shape(shape), np.dtype(dtype), i)


def full(shape, value, dtype=np.float32, device=None):
    out = empty(shape, dtype, device)
    out.fill(float(value))
    return out


def zeros(shape, dtype=np.float32, device=None):
    return full(shape, 0.0, dtype, device)


def to_device(array, device=None) -> "_C.cuda.DeviceArray":
    """Copy a numpy array (or anything np.asarray takes) to the GPU, keeping its dtype."""
    idx = _index(device)
    a = np.asarray(array)
    if a.dtype not in DTYPES:
        raise TypeError(f"to_device: dtype {a.dtype} is not supported on CUDA "
                        f"({', '.join(str(d) for d in DTYPES)})")
    return _C.cuda.DeviceArray.from_numpy(a, idx)


def to_host(array) -> np.ndarray:
    """A numpy copy of a DeviceArray (waits for the work queued on its stream)."""
    _require()
    if not isinstance(array, _C.cuda.DeviceArray):
        raise TypeError(f"to_host: expected a DeviceArray, got {type(array).__name__}")
    return array.numpy()


# ---- array-level operations (the cuda kernels of the shape ops) ----------------------------------
def _strides(shape) -> list:
    out, step = [], 1
    for n in reversed(shape):
        out.append(step)
        step *= n
    return out[::-1]


def as_strided(a, shape, strides, offset: int = 0):
    """A new contiguous array of ``a``'s elements at offset + sum(i_k * strides[k]) (in elements)."""
    return _C.cuda.strided_copy(a, _shape(shape), _shape(strides), int(offset))


def permute(a, dims):
    """``np.transpose(a, dims)`` as a new contiguous array."""
    dims = [int(d) for d in dims]
    if sorted(dims) != list(range(a.ndim)):
        raise ValueError(f"permute: dims {tuple(dims)} is not a permutation of {a.ndim} axes")
    st = _strides(a.shape)
    return as_strided(a, [a.shape[d] for d in dims], [st[d] for d in dims])


def expand(a, shape):
    """``np.broadcast_to(a, shape)`` materialised (a new contiguous array)."""
    shape = tuple(int(s) for s in shape)
    lead = len(shape) - a.ndim
    if lead < 0:
        raise ValueError(f"expand: cannot expand shape {a.shape} to {shape}")
    st = _strides(a.shape)
    strides = [0] * lead
    for i, n in enumerate(a.shape):
        if n == shape[lead + i]:
            strides.append(st[i])
        elif n == 1:
            strides.append(0)
        else:
            raise ValueError(f"expand: cannot expand shape {a.shape} to {shape}")
    return as_strided(a, shape, strides)


def sum_to_shape(a, shape):
    """``a`` summed down to ``shape`` (the gradient of a broadcast to a.shape); float arrays."""
    return _C.cuda.sum_to_shape(a, _shape(shape))


def is_basic_index(k) -> bool:
    """Whether k is a basic index (an int, a slice, None or Ellipsis), not an index array."""
    return (k is None or k is Ellipsis or isinstance(k, slice)
            or isinstance(k, (int, np.integer)) and not isinstance(k, (bool, np.bool_)))


def basic_index(shape, key):
    """(shape, strides, offset) in elements of ``x[key]`` for an array x of ``shape``, for a basic key
    (ints, slices with any step, None, Ellipsis): numpy's own indexing rules, run on a stand-in that
    is never read (a one-byte buffer viewed with the element strides)."""
    parts = key if isinstance(key, tuple) else (key,)
    if not all(is_basic_index(k) for k in parts):
        bad = next(type(k).__name__ for k in parts if not is_basic_index(k))
        raise NotImplementedError(f"basic_index takes ints, slices, None and Ellipsis; an index of type {bad} is "
                                  "advanced indexing (a tensor indexed with one index array: ops/_cuda_index.py)")
    base = np.zeros(1, np.uint8)
    stand_in = np.lib.stride_tricks.as_strided(base, shape=tuple(shape), strides=tuple(_strides(shape)),
                                               writeable=False)
    # with an Ellipsis in the key, numpy returns a (0-d) view even when ints select one element
    view = stand_in[parts if any(k is Ellipsis for k in parts) else parts + (Ellipsis,)]
    offset = view.__array_interface__["data"][0] - base.__array_interface__["data"][0]
    return view.shape, view.strides, offset


def getitem(a, key):
    """``a[key]`` for a basic key, as a new contiguous array."""
    shape, strides, offset = basic_index(a.shape, key)
    return as_strided(a, shape, strides, offset)


def as_strided_assign(dst, shape, strides, offset, src) -> None:
    """Writes the contiguous ``src`` (of ``shape``) to ``dst``'s elements at offset + sum(i_k * strides[k])."""
    _C.cuda.strided_assign(dst, _shape(shape), _shape(strides), int(offset), src)


def setitem(dst, key, src) -> None:
    """``dst[key] = src`` for a basic key and a src of exactly the selected shape (queued on the stream)."""
    shape, strides, offset = basic_index(dst.shape, key)
    as_strided_assign(dst, shape, strides, offset, src)


def cat(arrays, axis: int = 0):
    return _C.cuda.cat(list(arrays), int(axis))


def split(a, sizes, axis: int):
    """Pieces of ``a`` along ``axis`` with the given sizes (the gradient of cat)."""
    pieces, start = [], 0
    for n in sizes:
        key = (slice(None),) * axis + (slice(start, start + n),)
        pieces.append(getitem(a, key))
        start += n
    return pieces


def clone(a):
    out = empty(a.shape, a.dtype, a.device)
    out.copy_(a)
    return out


def cast(a, dtype):
    """A copy of ``a`` in ``dtype`` (C++ conversions; to bool: != 0)."""
    return _C.cuda.cast(a, np.dtype(dtype))


def matmul(a, b, *, trans_a: bool = False, trans_b: bool = False, alpha: float = 1.0, beta: float = 0.0, out=None):
    """op(a) @ op(b) on device arrays; returns a new DeviceArray unless out is given."""
    _require()
    m = a.shape[1] if trans_a else a.shape[0]
    n = b.shape[0] if trans_b else b.shape[1]
    if out is None:
        out = _C.cuda.DeviceArray([m, n], np.float32, a.device)
    _C.cuda.sgemm(a, b, out, trans_a, trans_b, float(alpha), float(beta))
    return out


def relu(x):
    _require()
    y = _C.cuda.DeviceArray(list(x.shape), x.dtype, x.device)
    _C.cuda.relu_forward(x, y)
    return y


def relu_backward(y, grad_y):
    _require()
    gx = _C.cuda.DeviceArray(list(y.shape), y.dtype, y.device)
    _C.cuda.relu_backward(y, grad_y, gx)
    return gx


def adam_step(param, grad, exp_avg, exp_avg_sq, *, step: int, lr: float = 1e-3, betas=(0.9, 0.999),
              eps: float = 1e-8, weight_decay: float = 0.0, decoupled: bool = False) -> None:
    """One Adam (or AdamW with decoupled=True) update in place, torch's formulas; step counts from 1."""
    _require()
    if step < 1:
        raise ValueError(f"adam_step: step must be >= 1, got {step}")
    b1, b2 = betas
    bc1 = 1 - b1 ** step
    bc2_sqrt = math.sqrt(1 - b2 ** step)
    _C.cuda.adam_step(param, grad, exp_avg, exp_avg_sq, float(lr), float(b1), float(b2), float(eps),
                      float(weight_decay), bool(decoupled), float(bc1), float(bc2_sqrt))


def _register_device() -> None:
    """The ``cuda`` device of forgegrad.devices: DeviceArray storage, served by this module's API.

    Registered in every build, so that naming "cuda" without a usable GPU raises "CUDA is not
    available: <reason>" (the backend reports unavailable); the array type exists in CUDA builds."""
    from . import devices

    def _api():  # this module, its allocator API looked up at call time
        from . import cuda
        return cuda

    class CudaBackend(devices.DeviceBackend):
        label = "CUDA"

        def is_available(self) -> bool:
            return is_available()

        def unavailable_reason(self) -> str:
            return unavailable_reason()

        def empty(self, shape, dtype):
            return _api().empty(shape, dtype)

        def zeros(self, shape, dtype):
            return _api().zeros(shape, dtype)

        def full(self, shape, value, dtype):
            return _api().full(shape, value, dtype)

        def from_host(self, array):
            return to_device(array)

        def to_host(self, array):
            return _api().to_host(array)

        def copy(self, array):
            return _api().clone(array)

        def synchronize(self) -> None:
            _api().synchronize()

        # add (gradient accumulation): the registry's cuda Function of "add" (DeviceBackend's default)

    array_type = getattr(_C.cuda, "DeviceArray", None) if is_built() else None
    devices.register_device("cuda", array_type, CudaBackend())
    from .optim import kernels as optim_kernels
    from . import cuda_optim
    cuda_optim.register()  # multi-tensor Adam/AdamW/SGD (one launch over all parameters) in a CUDA build
    if "cuda" not in optim_kernels.devices_of("adam"):  # a multi-tensor kernel registered first is kept
        optim_kernels.register_kernel("adam", "cuda", _adam_kernel)


def _adam_kernel(params, grads, exp_avgs, exp_avg_sqs, max_exp_avg_sqs, steps, *, lr, beta1, beta2, eps,
                 weight_decay=0.0, decoupled_weight_decay=False, maximize=False) -> None:
    """forgegrad.optim's "adam" kernel on cuda (the table's signature): the fused adam_step, one launch
    per parameter. A multi-tensor kernel takes its place with ``register_kernel("adam", "cuda", fn)``
    (before or after this module registers)."""
    if max_exp_avg_sqs is not None:
        raise NotImplementedError("Adam(amsgrad=True) has no kernel for device 'cuda'")
    if maximize:
        raise NotImplementedError("Adam(maximize=True) has no kernel for device 'cuda'")
    for p, g, m, v, step in zip(params, grads, exp_avgs, exp_avg_sqs, steps):
        adam_step(p, g, m, v, step=int(step), lr=lr, betas=(beta1, beta2), eps=eps, weight_decay=weight_decay,
                  decoupled=decoupled_weight_decay)


_register_device()
