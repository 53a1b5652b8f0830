"""nn.Buffer (torch 2.5+): ``self.x = nn.Buffer(t, persistent=True)`` in a Module registers a buffer."""
from __future__ import annotations

import numpy as np

from .._validate import check_bool
from ..tensor import Tensor

__all__ = ["Buffer"]


class Buffer(Tensor):
    """``Buffer(data, *, persistent=True)``: a tensor that a Module registers as a buffer when assigned to one of
    its attributes (in its state_dict unless ``persistent=False``). The module holds a plain Tensor on the same
    storage, as torch's does."""

    __slots__ = ("persistent",)
    _is_buffer = True  # what Module.__setattr__ / register_buffer look for

    def __init__(self, data=None, *, persistent: bool = True):
        if data is None:
            data = np.empty((0,), np.float32)
        if not isinstance(data, (Tensor, np.ndarray)):
            raise TypeError(f"Buffer: data must be a forgegrad.Tensor (or numpy array), got {type(data).__name__}")
        arr = data._data if isinstance(data, Tensor) else data
        super().__init__(arr, dtype=arr.dtype)
        self._data = arr  # the same storage, as torch's detach()
        if isinstance(data, Tensor) and data.requires_grad:
            self.requires_grad_(True)
        self.persistent = check_bool(persistent, "Buffer: persistent")

    def as_tensor(self) -> Tensor:
        """A plain Tensor on this buffer's storage (what the module registers)."""
        t = Tensor._wrap_exact(self._data)
        if self.requires_grad:
            t.requires_grad_(True)
        return t
