"""forgegrad: a lean deep-learning framework with its own C++ (AVX-512/AVX2) and CUDA kernels."""
from ._version import __version__
from . import _C
from ._runtime import cpu_info, get_num_threads, get_simd, set_num_threads, set_simd
from . import kernels

__all__ = [
    "__version__", "cpu_info", "get_num_threads", "set_num_threads", "get_simd", "set_simd", "kernels",
]
