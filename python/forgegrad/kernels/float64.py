"""float64 kernels of a training step (forgegrad._C.float64, cpp/kernels/per_isa/float64.cpp): the Adam update,
conv2d's im2col / col2im, the LSTM cell's pointwise math and relu. Max pooling's float64 path is _C.pool's (the general
loop, a template over the element type). The GEMMs around them stay numpy's dgemm. Every kernel gives the same
bits at any thread count and on every ISA.
"""
from __future__ import annotations

from typing import Optional, Sequence

import numpy as np

from .. import _C
from .optim import _contiguous_grads, _contiguous_params, adam_arguments

__all__ = ["adam_step", "im2col", "col2im", "lstm_cell_forward", "lstm_cell_backward", "relu", "relu_backward"]


def adam_step(params: Sequence[np.ndarray], grads: Sequence[np.ndarray], exp_avgs: Sequence[np.ndarray],
              exp_avg_sqs: Sequence[np.ndarray], max_exp_avg_sqs: Optional[Sequence[np.ndarray]],
              steps: Sequence[float], *, lr: float, beta1: float, beta2: float, eps: float,
              weight_decay: float = 0.0, decoupled_weight_decay: bool = False, maximize: bool = False) -> None:
    """forgegrad.kernels.optim.adam_step for float64 arrays (torch's single-tensor float64 operations)."""
    params = list(params)
    grads = _contiguous_grads(list(grads))
    step_sizes, bc2_sqrts, kw = adam_arguments(len(params), steps, lr=lr, beta1=beta1, beta2=beta2, eps=eps,
                                               weight_decay=weight_decay,
                                               decoupled_weight_decay=decoupled_weight_decay, maximize=maximize)
    passed, write_back = _contiguous_params(params)
    _C.float64.adam_step(passed, grads, list(exp_avgs), list(exp_avg_sqs),
                         None if max_exp_avg_sqs is None else list(max_exp_avg_sqs), step_sizes, bc2_sqrts, **kw)
    for orig, copy in write_back:
        orig[...] = copy


def im2col(x: np.ndarray, kernel_size, stride, padding, dilation, out_hw) -> np.ndarray:
    """cols (C*KH*KW, N*OH*OW) of x (N, C, H, W) float64: row (c, kh, kw), column (n, oh, ow); padding
    (top, left) reads zeros (the bottom / right padding only sets out_hw)."""
    x = np.ascontiguousarray(x)
    N, C = x.shape[:2]
    cols = np.empty((C * kernel_size[0] * kernel_size[1], N * out_hw[0] * out_hw[1]), np.float64)
    _C.float64.im2col(x, cols, tuple(kernel_size), tuple(stride), tuple(padding), tuple(dilation), *out_hw)
    return cols


def col2im(cols: np.ndarray, input_shape, kernel_size, stride, padding, dilation, out_hw,
           out: Optional[np.ndarray] = None) -> np.ndarray:
    """im2col's adjoint: the (N, C, H, W) sum of cols' entries at the positions im2col read them from."""
    gx = np.empty(tuple(input_shape), np.float64) if out is None else out
    _C.float64.col2im(np.ascontiguousarray(cols), gx, tuple(kernel_size), tuple(stride), tuple(padding),
                      tuple(dilation), *out_hw)
    return gx


def lstm_cell_forward(gates, c_prev, act, c, tanh_c, h) -> None:
    """One LSTM step's pointwise part, in place: see _C.float64.lstm_cell_forward."""
    _C.float64.lstm_cell_forward(gates, c_prev, act, c, tanh_c, h)


def lstm_cell_backward(act, c_prev, tanh_c, dh, dc, d_gates) -> None:
    """Its backward, in place (dc becomes the gradient for c_prev): see _C.float64.lstm_cell_backward."""
    _C.float64.lstm_cell_backward(act, c_prev, tanh_c, dh, dc, d_gates)


def relu(x: np.ndarray) -> np.ndarray:
    """max(x, 0) of a float64 array, NaN kept (torch's relu)."""
    x = np.ascontiguousarray(x)
    y = np.empty_like(x)
    _C.float64.relu(x, y)
    return y


def relu_backward(grad_y: np.ndarray, y: np.ndarray) -> np.ndarray:
    """grad_y where y > 0 (or NaN), else 0: torch's threshold_backward on relu's output."""
    grad_y, y = np.ascontiguousarray(grad_y), np.ascontiguousarray(y)
    if grad_y.shape != y.shape:  # a broadcast gradient (sum().backward()): the output's shape
        grad_y = np.ascontiguousarray(np.broadcast_to(grad_y, y.shape))
    gx = np.empty_like(y)
    _C.float64.relu_backward(grad_y, y, gx)
    return gx
