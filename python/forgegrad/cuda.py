"""forgegrad.cuda: the CUDA kernels on device arrays, and the ``cuda`` device of forgegrad.devices.

What exists today: device discovery, ``DeviceArray`` (a float32 array in GPU memory, copied to
and from numpy), and the kernels sgemm, relu (forward/backward) and the fused Adam/AdamW step.
Behind the device seam: in a CUDA build, ``DeviceArray`` is the storage of tensors on ``cuda``
(``Tensor.to("cuda")``, ``.cpu()``), and the ops with CUDA kernels (relu, matmul of 2-D tensors)
dispatch to them through their op records. Without a device every entry point raises a clear
RuntimeError. This code has not run on a GPU yet.
"""
from __future__ import annotations

import math

import numpy as np

from . import _C

__all__ = ["is_available", "device_count", "unavailable_reason", "to_device", "matmul", "relu", "adam_step"]


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


def to_device(array) -> "_C.cuda.DeviceArray":
    """Copy a float32 numpy array to the GPU."""
    _require()
    a = np.ascontiguousarray(array)
    if a.dtype != np.float32:
        raise TypeError(f"to_device: array must be float32, got {a.dtype}")
    return _C.cuda.DeviceArray.from_numpy(a)


def matmul(a, b, *, trans_a: bool = False, trans_b: bool = False, alpha: float = 1.0, beta: float = 0.0, out=None):
    """op(a) @ op(b) on device arrays; returns a new DeviceArray unless out is given."""
    _require()
    m = a.shape[1] if trans_a else a.shape[0]
    n = b.shape[0] if trans_b else b.shape[1]
    if out is None:
        out = _C.cuda.DeviceArray([m, n])
    _C.cuda.sgemm(a, b, out, trans_a, trans_b, float(alpha), float(beta))
    return out


def relu(x):
    _require()
    y = _C.cuda.DeviceArray(list(x.shape))
    _C.cuda.relu_forward(x, y)
    return y


def relu_backward(y, grad_y):
    _require()
    gx = _C.cuda.DeviceArray(list(y.shape))
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
    optim_kernels.register_kernel("adam", "cuda", _adam_kernel)


def _adam_kernel(params, grads, exp_avgs, exp_avg_sqs, max_exp_avg_sqs, steps, *, lr, beta1, beta2, eps,
                 weight_decay=0.0, decoupled_weight_decay=False, maximize=False) -> None:
    """forgegrad.optim's "adam" kernel on cuda (the table's signature): the fused adam_step, one launch
    per parameter (a multi-tensor launch replaces this loop when it exists)."""
    if max_exp_avg_sqs is not None:
        raise NotImplementedError("Adam(amsgrad=True) has no kernel for device 'cuda'")
    if maximize:
        raise NotImplementedError("Adam(maximize=True) has no kernel for device 'cuda'")
    for p, g, m, v, step in zip(params, grads, exp_avgs, exp_avg_sqs, steps):
        adam_step(p, g, m, v, step=int(step), lr=lr, betas=(beta1, beta2), eps=eps, weight_decay=weight_decay,
                  decoupled=decoupled_weight_decay)


_register_device()
