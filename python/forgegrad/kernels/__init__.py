"""forgegrad's kernels on plain numpy float32 arrays.

This is the "fast backend" layer: each function validates its arguments (raising TypeError or
ValueError that name the argument and the expected shape) and calls the compiled kernel without
copying contiguous inputs. The autograd layer (forgegrad.Tensor) is built on these.
"""
from . import activation, loss, optim, softmax  # noqa: F401  (forgegrad.kernels.activation.relu, ...)
from .conv import conv2d_backward, conv2d_forward
from .gemm import bmm, matmul
from .norm import batch_norm_backward, batch_norm_forward
from .optim import adam_step, sgd_step, vector_norms
from .pool import (adaptive_avg_pool2d_backward, adaptive_avg_pool2d_forward, avg_pool2d_backward,
                   avg_pool2d_forward, max_pool2d_backward, max_pool2d_forward)
from .rnn import RnnSaved, gru_backward, gru_forward, lstm_backward, lstm_forward, rnn_backward, rnn_forward

__all__ = [
    "matmul", "bmm",
    "optim", "adam_step", "sgd_step", "vector_norms",
    "conv2d_forward", "conv2d_backward", "batch_norm_forward", "batch_norm_backward",
    "max_pool2d_forward", "max_pool2d_backward", "avg_pool2d_forward", "avg_pool2d_backward",
    "adaptive_avg_pool2d_forward", "adaptive_avg_pool2d_backward",
    "RnnSaved", "lstm_forward", "lstm_backward", "gru_forward", "gru_backward", "rnn_forward", "rnn_backward",
]
