"""forgegrad's kernels on plain numpy float32 arrays.

This is the "fast backend" layer: each function validates its arguments (raising TypeError or
ValueError that name the argument and the expected shape) and calls the compiled kernel without
copying contiguous inputs. The autograd layer (forgegrad.Tensor) is built on these.
"""
from . import activation, loss, softmax  # noqa: F401  (forgegrad.kernels.activation.relu, ...)
from .gemm import bmm, matmul
from . import optim
from .optim import adam_step, sgd_step, vector_norms

__all__ = ["matmul", "bmm"]
__all__ += ["optim", "adam_step", "sgd_step", "vector_norms"]
