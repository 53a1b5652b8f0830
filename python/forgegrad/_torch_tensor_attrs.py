"""torch's Tensor attributes and small methods that forgegrad.Tensor lacked: memory layout (is_contiguous, stride,
storage_offset, data_ptr, nbytes, itemsize), device queries (get_device, is_cpu, is_shared, pin_memory,
is_pinned), dtype queries (is_complex, is_signed), casts (half, bfloat16, byte, char, short), ndimension,
is_inference, retains_grad and new_empty_strided. ``install()`` adds each one the class does not have yet."""
from __future__ import annotations

import numpy as np

from . import dtypes as _dtypes
from . import _version_counter as _vc
from ._memory import ALIGN
from .devices import MetaArray


def _strides(arr):
    """Element strides of a storage array (contiguous ones for arrays that have no byte strides or no elements)."""
    st = getattr(arr, "strides", None)
    if st is not None and isinstance(arr, np.ndarray) and arr.size:
        out = [s // arr.dtype.itemsize for s in st]
        for d in range(arr.ndim - 1, -1, -1):
            if arr.shape[d] == 1 and out[d] == 0:  # numpy's newaxis; torch's unsqueeze: the next dim's extent
                out[d] = out[d + 1] * arr.shape[d + 1] if d + 1 < arr.ndim else 1
        return tuple(out)
    out, n = [], 1  # no byte strides, or no elements: contiguous strides, as torch gives an empty tensor
    for d in reversed(arr.shape):
        out.append(n)
        n *= max(int(d), 1)
    return tuple(reversed(out))


def is_contiguous(self, memory_format=None) -> bool:
    """Whether the elements lie in row-major order without gaps (dimensions of size 1 do not count, as torch's).
    Only torch's contiguous_format exists here: ``memory_format`` other than None / "contiguous_format" raises."""
    if memory_format is not None and str(memory_format).split(".")[-1] != "contiguous_format":
        raise ValueError(f"is_contiguous(): argument 'memory_format' must be contiguous_format (forgegrad has no "
                         f"other memory format), got {memory_format!r}")
    flags = getattr(self._data, "flags", None)
    if flags is None or type(self._data) is MetaArray:
        return True
    try:
        return bool(flags["C_CONTIGUOUS"])
    except (TypeError, KeyError):
        return bool(getattr(flags, "c_contiguous", True))


def stride(self, dim=None):
    """The step, in elements, between neighbours along each dimension (a tuple), or along ``dim``."""
    st = _strides(self._data)
    if dim is None:
        return st
    if isinstance(dim, bool) or not isinstance(dim, (int, np.integer)):
        raise TypeError(f"stride(): argument 'dim' must be an int, got {type(dim).__name__}")
    n = len(st)
    if not -max(n, 1) <= dim < max(n, 1):
        raise IndexError(f"stride(): dimension out of range (expected to be in range of [{-max(n, 1)}, "
                         f"{max(n, 1) - 1}], but got {dim})")
    return st[dim] if n else 1


def storage_offset(self) -> int:
    """How many elements into its storage (the memory it shares with its views) this tensor starts."""
    arr = self._data
    if not isinstance(arr, np.ndarray):
        return 0
    root = _vc.root(arr)
    if not isinstance(root, np.ndarray) or root is arr:
        return 0
    start = root.__array_interface__["data"][0]
    if root.dtype == np.uint8 and arr.dtype != np.uint8 and root.ndim == 1:
        start += (-start) % ALIGN  # forgegrad._memory.empty_aligned: the storage begins at the aligned byte
    return max(arr.__array_interface__["data"][0] - start, 0) // arr.dtype.itemsize


def data_ptr(self) -> int:
    """The address of the first element (0 for a meta tensor, which has no memory)."""
    arr = self._data
    if type(arr) is MetaArray:
        return 0
    if isinstance(arr, np.ndarray):
        return int(arr.__array_interface__["data"][0])
    cai = getattr(arr, "__cuda_array_interface__", None)
    if cai is not None:
        return int(cai["data"][0])
    ptr = getattr(getattr(arr, "data", None), "ptr", None)
    if ptr is None:
        raise RuntimeError(f"data_ptr(): the {self.device} array has no address forgegrad can read")
    return int(ptr)


def _nbytes(self) -> int:
    return int(self.numel()) * self._data.dtype.itemsize


def _itemsize(self) -> int:
    return self._data.dtype.itemsize


def get_device(self) -> int:
    """-1 for a CPU (or meta) tensor, else the device index (forgegrad has one device of each kind: 0)."""
    return -1 if self.device.type in ("cpu", "meta") else 0


def _is_cpu(self) -> bool:
    return self.device.type == "cpu"


def is_complex(self) -> bool:
    """Whether the dtype is complex (complex64, complex128)."""
    return self._data.dtype.kind == "c"


def is_signed(self) -> bool:
    return bool(self.dtype.is_signed)


def is_inference(self) -> bool:
    """True for an inference tensor: one made inside ``inference_mode()``, or a view of one (torch's; see
    forgegrad._inference_tensors)."""
    return self._is_inference


def ndimension(self) -> int:
    return self.ndim


def half(self):
    return self._cast(np.float16)


def bfloat16(self):
    """This tensor as forgegrad.bfloat16 (rounded to nearest even, as torch's); needs ml_dtypes."""
    return self._cast(_dtypes.load_bfloat16())


def byte(self):
    return self._cast(np.uint8)


def char(self):
    return self._cast(np.int8)


def short(self):
    return self._cast(np.int16)


def new_empty_strided(self, size, stride, *, dtype=None, device=None, requires_grad=False):
    """An uninitialised tensor of ``size`` and ``stride``, in this tensor's dtype unless ``dtype`` (CPU only)."""
    from ._torch_globals import empty_strided
    if device is None and self.device.type != "cpu":
        raise NotImplementedError("new_empty_strided(): forgegrad makes strided tensors on the CPU only")
    return empty_strided(size, stride, dtype=self.dtype if dtype is None else dtype, device=device,
                         requires_grad=requires_grad)


def _retains_grad(self) -> bool:
    """Whether retain_grad() was called on this non-leaf tensor (False for a leaf, as torch's)."""
    return bool(self._retains_grad) and self._ctx is not None


def is_shared(self) -> bool:
    """False: forgegrad tensors are never in shared memory (it has no share_memory_())."""
    return False


def pin_memory(self, device=None):
    """This tensor itself on the CPU: forgegrad has no page-locked memory (torch without an accelerator raises
    here instead). Another device's tensor raises."""
    if self.device.type != "cpu":
        raise RuntimeError(f"pin_memory(): only CPU tensors can be pinned, this one is on {self.device}")
    return self


def is_pinned(self, device=None) -> bool:
    return False


METHODS = {f.__name__: f for f in (
    is_contiguous, stride, storage_offset, data_ptr, get_device, is_complex, is_signed, is_inference, ndimension,
    half, bfloat16, byte, char, short, new_empty_strided, is_shared, pin_memory, is_pinned)}
PROPERTIES = {"nbytes": _nbytes, "itemsize": _itemsize, "is_cpu": _is_cpu, "retains_grad": _retains_grad}


def install(tensor_class) -> None:
    """Add the methods and properties ``tensor_class`` lacks (never replacing one it has)."""
    if np.dtype(np.float16) not in _vc.TYPE_NAMES:  # half().type() is torch's "torch.HalfTensor"
        _vc.TYPE_NAMES[np.dtype(np.float16)] = "HalfTensor"
    for name, fn in METHODS.items():
        if not hasattr(tensor_class, name):
            setattr(tensor_class, name, fn)
    for name, fn in PROPERTIES.items():
        if not hasattr(tensor_class, name):
            setattr(tensor_class, name, property(fn, doc=fn.__doc__))
