"""forgegrad: a lean deep-learning framework with its own C++ (AVX-512/AVX2) and CUDA kernels."""
from ._version import __version__
from . import _C
from ._runtime import cpu_info, get_num_threads, get_simd, set_num_threads, set_simd
from . import kernels
from .autograd import enable_grad, is_grad_enabled, no_grad, set_grad_enabled
from .tensor import (Tensor, arange, as_tensor, cat, empty, eye, full, manual_seed, ones, ones_like, rand,
                     randint, randn, stack, tensor, where, zeros, zeros_like)
from . import nn

float32 = "float32"
int64 = "int64"

__all__ = [
    "__version__", "cpu_info", "get_num_threads", "set_num_threads", "get_simd", "set_simd", "kernels",
    "Tensor", "tensor", "as_tensor", "zeros", "ones", "full", "empty", "zeros_like", "ones_like", "arange",
    "eye", "rand", "randn", "randint", "cat", "stack", "where", "manual_seed",
    "no_grad", "enable_grad", "set_grad_enabled", "is_grad_enabled", "nn",
]
