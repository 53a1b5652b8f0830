"""forgegrad's kernels on plain numpy float32 arrays.

This is the "fast backend" layer: each function validates its arguments (raising TypeError or
ValueError that name the argument and the expected shape) and calls the compiled kernel without
copying contiguous inputs. The autograd layer (forgegrad.Tensor) is built on these.
"""
from .gemm import bmm, matmul

__all__ = ["matmul", "bmm"]
from .conv import conv2d_backward, conv2d_forward  # noqa: E402
from .norm import batch_norm_backward, batch_norm_forward  # noqa: E402
from .pool import (adaptive_avg_pool2d_backward, adaptive_avg_pool2d_forward, avg_pool2d_backward,  # noqa: E402
                   avg_pool2d_forward, max_pool2d_backward, max_pool2d_forward)
__all__ += ["conv2d_forward", "conv2d_backward", "batch_norm_forward", "batch_norm_backward",
            "max_pool2d_forward", "max_pool2d_backward", "avg_pool2d_forward", "avg_pool2d_backward",
            "adaptive_avg_pool2d_forward", "adaptive_avg_pool2d_backward"]
