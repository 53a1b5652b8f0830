"""forgegrad's kernels on plain numpy float32 arrays.

This is the "fast backend" layer: each function validates its arguments (raising TypeError or
ValueError that name the argument and the expected shape) and calls the compiled kernel without
copying contiguous inputs. The autograd layer (forgegrad.Tensor) is built on these.
"""
from .gemm import bmm, matmul
from .rnn import (RnnSaved, gru_backward, gru_forward, lstm_backward, lstm_forward, rnn_backward,
                  rnn_forward)

__all__ = ["matmul", "bmm"]
__all__ += ["RnnSaved", "lstm_forward", "lstm_backward", "gru_forward", "gru_backward", "rnn_forward",
            "rnn_backward"]
