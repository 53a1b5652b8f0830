"""forgegrad: a lean deep-learning framework with its own C++ (AVX-512/AVX2) and CUDA kernels."""
import importlib as _importlib

from ._version import __version__
from . import _C  # noqa: F401  (loads the compiled kernels first; forgegrad._C is public)
from ._runtime import cpu_info, get_num_threads, get_simd, set_num_threads, set_simd
from . import kernels
from .devices import device
from .autograd import enable_grad, inference_mode, is_grad_enabled, is_inference_mode_enabled, no_grad, set_grad_enabled
from .tensor import Tensor
# after .tensor: the function forgegrad.tensor replaces the submodule's name on the package
from .factories import (arange, as_tensor, cat, empty, eye, full, manual_seed, ones, rand, randn, stack, tensor, where,
                        zeros)
from . import dtypes, return_types
from .dtypes import (bool, double, dtype, float, float16, float32, float64, half, int, int8, int16, int32,  # noqa: A004
                     int64, long, short, uint8, complex64, cfloat, complex128, cdouble)
from ._functions import (flatten, reshape, squeeze, unsqueeze, transpose, permute, exp, log, sqrt, abs, sin, cos,
                         tril, triu,
                         sigmoid, tanh, relu, softmax, log_softmax, clamp, clip, sum, mean, var, std, max, min,
                         amax, amin, argmax, argmin, cumsum, matmul, mm, bmm, split, chunk, unbind, narrow, numel,
                         is_tensor, is_floating_point, from_numpy, randn_like, rand_like, randint_like,
                         full_like, empty_like, multinomial, LongTensor, FloatTensor, DoubleTensor, IntTensor,
                         BoolTensor, ByteTensor, zeros_like, ones_like, randint, add, sub, mul, div, pow, neg,
                         t, allclose, equal, maximum, minimum, fmax, fmin, tile, norm)  # noqa: A004  (torch's module-level functions)
from . import ops
ops.load_all()  # every op module registers its ops, before the layers that use them are defined
from . import _torch_math  # noqa: E402
_torch_math.install(globals())  # torch's math, reduction, product and factory functions, and their Tensor methods
from . import _torch_pointwise  # noqa: E402
_torch_pointwise.install(globals())  # floor, log1p, tan, ... (ops/pointwise_math.py), their methods and in-place forms
from . import _torch_logic  # noqa: E402
_torch_logic.install(globals())  # comparisons, all/any, logical and bitwise ops, isin, histc, ... and their methods
from . import special  # noqa: E402
special.install(globals())  # torch.special as forgegrad.special; polygamma, mvlgamma, igamma, igammac and methods
from . import nn, optim  # noqa: E402
from ._torch_indexing_methods import _ti, _ts, install as _install_indexing  # noqa: E402
_install_indexing(Tensor)
globals().update({n: getattr(m, n) for m in (_ti, _ts) for n in m.__all__})  # fg.gather, fg.sort, ...
from . import _torch_shape_methods  # noqa: E402
_torch_shape_methods.install(globals())  # hstack, tensor_split, unflatten, rot90, diff, index_put, ... and methods
from .serialization import load, save  # noqa: E402
from . import sparse  # noqa: E402  (torch.sparse: COO / CSR tensors, forgegrad/sparse/)
from .sparse import layout, sparse_coo, sparse_coo_tensor, sparse_csr, sparse_csr_tensor, strided  # noqa: E402
from . import data, datasets, train, utils  # noqa: E402
from . import func  # noqa: E402  (torch.func: grad, vjp, jvp, jacrev, jacfwd, hessian, vmap, functional_call)
from .func import vmap  # noqa: E402  (torch.vmap)
from .linalg import det, inv as inverse, logdet, matrix_exp, matrix_power, slogdet  # noqa: E402  (torch.det, ...)
from ._linalg_lu import (cholesky_inverse, cholesky_solve, lu_unpack, torch_lu as lu,  # noqa: E402
                         torch_lu_solve as lu_solve)
from ._linalg_house import (geqrf, householder_product as orgqr, ormqr, pinverse, torch_cholesky as cholesky,  # noqa: E402
                            torch_qr as qr, torch_svd as svd, triangular_solve)
from . import _torch_named_args  # noqa: E402
_torch_named_args.install(globals())  # torch.det(input), torch.pow(input, exponent), Tensor.to's overloads, ...
from . import _torch_dtype_utils, _torch_globals, _torch_functional_aliases, _torch_tensor_attrs  # noqa: E402
for _m in (_torch_dtype_utils, _torch_globals, _torch_functional_aliases):  # torch's globals and F aliases
    _m.install(globals())
_torch_tensor_attrs.install(Tensor)  # stride(), data_ptr(), nbytes, half(), ... where Tensor lacks them
from . import _complex_tensor  # noqa: E402
_complex_tensor.install(globals(), Tensor)  # real, imag, conj, angle, view_as_real, complex, polar, ...
from . import amp  # noqa: E402  (torch.amp: autocast on the CPU)
from .amp import (autocast, get_autocast_dtype, is_autocast_enabled, set_autocast_dtype,  # noqa: E402
                  set_autocast_enabled)
from . import fft  # noqa: E402  (torch.fft)
from ._stft import istft, stft  # noqa: E402
Tensor.stft, Tensor.istft = stft, istft
from . import _torch_windows, _torch_namespace_gaps  # noqa: E402
_torch_windows.install(globals())  # hann_window, hamming_window, blackman_window, bartlett_window, kaiser_window
_torch_namespace_gaps.install(globals())  # Size, fill, detach, is_inference, matmul precision, torch.abs_(x), ...
from . import _tensor_method_gaps  # noqa: E402
_tensor_method_gaps.install(globals(), Tensor)  # addr, frexp, nextafter, squeeze_, exponential_, new, `in`, ...
from ._compile import compile  # noqa: E402, A004  (torch.compile: a frozen inference plan, forgegrad/_compile.py)
from . import compiler, _dynamo  # noqa: E402, F401  (torch.compiler, torch._dynamo's reset / config)

# Imported on first use: they pull in optional packages (onnx, onnxruntime, matplotlib) or are
# only needed by the command line.
_LAZY_SUBMODULES = ("onnx", "models", "cuda", "bench", "cli", "linalg", "distributions")


# torch names that forgegrad has under another name, or not at all: the AttributeError says so.
_TORCH_NAMES = {
    "hub": None, "backends": None,
    "jit": ("; forgegrad has no TorchScript (jit.script / jit.trace): for faster inference use "
            "forgegrad.compile(model) or nn.utils.freeze(model), for a portable graph forgegrad.onnx.export"),
}


def __getattr__(name):
    if name in _LAZY_SUBMODULES:
        return _importlib.import_module(f".{name}", __name__)
    if name == "bfloat16":  # made on first use: it needs the optional ml_dtypes package (dtypes.load_bfloat16)
        return dtypes.load_bfloat16()
    if name in _TORCH_NAMES:
        where = _TORCH_NAMES[name]
        hint = (where if where and where.startswith(";") else f"; forgegrad has it as {where}" if where else
                "; forgegrad has no equivalent yet (see docs/torch_compat.md for the torch names it has)")
        raise AttributeError(f"module 'forgegrad' has no attribute {name!r} (torch.{name}){hint}")
    raise AttributeError(f"module 'forgegrad' has no attribute {name!r}")


__all__ = [
    "__version__", "cpu_info", "get_num_threads", "set_num_threads", "get_simd", "set_simd", "kernels",
    "Tensor", "tensor", "as_tensor", "zeros", "ones", "full", "empty", "arange", "eye", "rand", "randn", "cat",
    "stack", "where", "manual_seed", "dtypes", "return_types", "dtype", "float32", "float", "float64", "double",
    "float16", "half", "int64", "long", "int32", "int", "int16", "short", "int8", "uint8", "bool", "utils",
    "complex64", "cfloat", "complex128", "cdouble", "fft", "stft", "istft", "amp", "autocast", "is_autocast_enabled",
    "get_autocast_dtype", "set_autocast_enabled", "set_autocast_dtype",
    "device", "ops", "no_grad", "enable_grad", "set_grad_enabled", "is_grad_enabled", "inference_mode",
    "is_inference_mode_enabled",
    "nn", "optim", "save", "load", "data", "datasets", "train", "sparse", "sparse_coo_tensor", "sparse_csr_tensor",
    "layout", "strided", "sparse_coo", "sparse_csr",
    "onnx", "models", "cuda", "bench", "cli", "linalg", "special", "distributions", "func", "vmap",
    "compile", "compiler",
]
__all__ += [  # the torch-style module-level functions (forgegrad._functions)
    "flatten", "reshape", "squeeze", "unsqueeze", "transpose", "permute", "exp", "log", "sqrt", "abs", "sigmoid",
    "tanh", "relu", "softmax", "log_softmax", "clamp", "clip", "sum", "mean", "var", "std", "max", "min", "amax",
    "amin", "argmax", "argmin", "matmul", "mm", "bmm", "split", "chunk", "unbind", "narrow", "numel", "is_tensor",
    "is_floating_point", "from_numpy", "randn_like", "rand_like", "randint_like", "full_like", "empty_like",
    "multinomial", "LongTensor", "FloatTensor", "DoubleTensor", "IntTensor", "BoolTensor", "ByteTensor", "zeros_like",
    "ones_like", "randint", "add", "sub", "mul", "div", "pow", "neg", "t", "allclose", "equal", "sin", "cos", "tril",
    "triu", "cumsum", "maximum", "minimum", "fmax", "fmin", "tile", "norm",
]
__all__ += ["det", "inverse", "logdet", "matrix_exp", "matrix_power", "slogdet",  # torch's, from forgegrad.linalg
            "lu", "lu_solve", "lu_unpack", "cholesky", "cholesky_solve", "cholesky_inverse", "orgqr", "geqrf", "ormqr",
            "svd", "qr", "triangular_solve", "pinverse"]
__all__ += _ti.__all__ + _ts.__all__  # indexing, sorting and scans (forgegrad._torch_indexing)
__all__ += sorted(_torch_math.FUNCTIONS)
__all__ += [n for n in _torch_shape_methods.__all__ if n not in __all__]  # forgegrad._torch_shape*
__all__ += sorted(set(_torch_dtype_utils.FUNCTIONS) | set(_torch_globals.FUNCTIONS)
                  | set(_torch_functional_aliases.FUNCTIONS))  # torch's dtype utilities, globals, F aliases
__all__ += sorted(_torch_pointwise.FUNCTIONS)
__all__ += sorted(_torch_windows.FUNCTIONS) + [n for n in sorted(_torch_namespace_gaps.FUNCTIONS)
                                               if n in globals() and n not in __all__]
__all__ += sorted(_tensor_method_gaps.FUNCTIONS)
__all__ += [n for n in sorted(_complex_tensor.FUNCTIONS) if n not in __all__]
__all__ += sorted(special.PACKAGE)
__all__ += [n for n in sorted(_torch_logic.FUNCTIONS) if n not in __all__]
