"""forgegrad: a lean deep-learning framework with its own C++ (AVX-512/AVX2) and CUDA kernels."""
import importlib as _importlib

from ._version import __version__
from . import _C  # noqa: F401  (loads the compiled kernels first; forgegrad._C is public)
from ._runtime import cpu_info, get_num_threads, get_simd, set_num_threads, set_simd
from . import kernels
from .devices import device
from .autograd import enable_grad, is_grad_enabled, no_grad, set_grad_enabled
from .tensor import (Tensor, arange, as_tensor, cat, empty, eye, full, manual_seed, ones, ones_like, rand,
                     randint, randn, stack, tensor, where, zeros, zeros_like)
from . import ops
ops.load_all()  # every op module registers its ops, before the layers that use them are defined
from . import nn, optim  # noqa: E402
from .serialization import load, save  # noqa: E402
from . import data, datasets, train  # noqa: E402

float32 = "float32"
int64 = "int64"

# Imported on first use: they pull in optional packages (onnx, onnxruntime, matplotlib) or are
# only needed by the command line.
_LAZY_SUBMODULES = ("onnx", "models", "cuda", "bench", "cli")


def __getattr__(name):
    if name in _LAZY_SUBMODULES:
        return _importlib.import_module(f".{name}", __name__)
    raise AttributeError(f"module 'forgegrad' has no attribute {name!r}")


__all__ = [
    "__version__", "cpu_info", "get_num_threads", "set_num_threads", "get_simd", "set_simd", "kernels",
    "Tensor", "tensor", "as_tensor", "zeros", "ones", "full", "empty", "zeros_like", "ones_like", "arange",
    "eye", "rand", "randn", "randint", "cat", "stack", "where", "manual_seed",
    "device", "ops", "no_grad", "enable_grad", "set_grad_enabled", "is_grad_enabled",
    "nn", "optim", "save", "load", "data", "datasets", "train",
    "onnx", "models", "cuda", "bench", "cli",
]
