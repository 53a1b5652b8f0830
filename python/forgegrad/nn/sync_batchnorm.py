"""SyncBatchNorm: batch norm whose training statistics span every rank of a forgegrad.distributed (MPI) group,
as torch.nn.SyncBatchNorm.

Training under a job of more than one rank: each rank reduces its own batch to (count, mean, sum of squared
deviations) per channel, the group allgathers these 2C + 1 numbers per rank and every rank combines them in the
same order (Chan's parallel variance), so all ranks normalise with identical statistics: those of one BatchNorm
over the concatenated batch, uneven and empty per-rank batches included. The running statistics get that
mean and the unbiased variance over the whole count. Backward all-reduces the per-channel sums of the gradient
and of gradient * (x - mean), from which each rank's input gradient is the one-process BatchNorm's on its rows;
weight and bias get this rank's share only (DDP's gradient averaging combines them, as torch's).

Without ``forgegrad.distributed.init()``, in a world of one rank, in eval mode (running statistics), or on
meta tensors it is plain BatchNorm. (torch's SyncBatchNorm refuses CPU tensors once a process group exists;
forgegrad's ranks are CPU processes, so here it runs.) Every rank of the group must call it in the same
order, with the same ``training`` mode, and run its backward: like any collective, a rank that skips one
leaves the others waiting.
"""
from __future__ import annotations

import numpy as np

from .. import devices
from ..autograd import Function
from ..kernels import norm as norm_kernels
from ..tensor import Tensor
from . import functional as F
from .module import Module
from .normalization import _BatchNorm

__all__ = ["SyncBatchNorm"]


def _planes(a: np.ndarray) -> np.ndarray:
    """(N, C, *) as (N, C, L): every per-channel sum is over axes 0 and 2."""
    a = np.ascontiguousarray(a)
    return a.reshape(a.shape[0], a.shape[1], int(np.prod(a.shape[2:], dtype=np.int64)))  # no -1: N may be 0


def _sums(a64: np.ndarray) -> np.ndarray:
    return a64.sum(axis=(0, 2))


def _on_kernels(x: np.ndarray) -> bool:
    """float32 (N, C), (N, C, L), (N, C, H, W) or (N, C, D, H, W): the C++ batch-norm kernels take it."""
    return x.dtype == np.float32 and 2 <= x.ndim <= 5


def _local_stats(x: np.ndarray):
    """This rank's (count, mean, sum of squared deviations) per channel, float64."""
    xr = _planes(x)
    c, count = xr.shape[1], xr.shape[0] * xr.shape[2]
    if count == 0:
        return 0, np.zeros(c), np.zeros(c)
    if count > 1 and _on_kernels(x):  # the kernel's batch statistics (biased variance = 1 / invstd^2 at eps 0)
        _, mean, invstd = norm_kernels.batch_norm_forward(x, training=True, momentum=0.0, eps=0.0)
        return count, mean.astype(np.float64), count / np.square(invstd.astype(np.float64))
    x64 = xr.astype(np.float64)
    mean = _sums(x64) / count
    x64 -= mean[None, :, None]  # two passes: the squared deviations, not E[x^2] - E[x]^2
    np.square(x64, out=x64)
    return count, mean, _sums(x64)


def _normalize(x, weight, bias, mean, var, invstd, eps):
    """(x - mean) * invstd * weight + bias with the group's statistics."""
    if _on_kernels(x) and x.size and all(p is None or p.dtype == np.float32 for p in (weight, bias)):
        f32 = np.float32
        return norm_kernels.batch_norm_forward(x, weight, bias, mean.astype(f32), var.astype(f32), training=False,
                                               eps=eps)[0]
    scale = invstd if weight is None else invstd * weight
    shift = -mean * scale if bias is None else bias - mean * scale
    out = np.multiply(_planes(x), scale.astype(x.dtype)[None, :, None])
    out += shift.astype(x.dtype)[None, :, None]
    return out.reshape(x.shape)


def _grad_sums(g, x, mean):
    """Per channel: sum of g and sum of g * (x - mean), float64."""
    c = x.shape[1]
    if _on_kernels(x) and x.size and g.dtype == np.float32:  # the eval-mode backward at invstd 1 gives both
        _, s_xmu, s_dy = norm_kernels.batch_norm_backward(g, x, None, mean.astype(np.float32), np.ones(c, np.float32),
                                                          training=False, need=(False, True, True))
        return s_dy.astype(np.float64), s_xmu.astype(np.float64)
    xr = _planes(x)
    g64 = _planes(g).astype(np.float64)
    s_dy = _sums(g64)
    g64 *= xr
    return s_dy, _sums(g64) - mean * s_dy  # sum of g * x - mean * sum of g, in float64


class _SyncBatchNormFunction(Function):
    """The training forward and backward of SyncBatchNorm over ``group`` (a ProcessGroup of two or more ranks).
    ``running_mean`` / ``running_var``: numpy arrays updated in place, or None.

    float32 inputs of 2 to 5 dimensions use forgegrad's C++ batch-norm kernels for this rank's statistics, the
    normalisation and the gradient sums; others run numpy with float64 sums. The input gradient's elementwise
    pass folds the per-channel terms: grad_input = g * A + x * B + D."""

    handles_float64 = True

    @staticmethod
    def forward(ctx, x, weight, bias, running_mean, running_var, eps, momentum, group):
        from ..distributed import comm
        c = x.shape[1]
        count, local_mean, local_m2 = _local_stats(x)
        local = np.empty(2 * c + 1, np.float64)
        local[0], local[1:c + 1], local[c + 1:] = count, local_mean, local_m2
        rows = comm.allgather(local, group=group)  # (ranks, 2C + 1), the same array on every rank
        counts, means, m2s = rows[:, 0], rows[:, 1:c + 1], rows[:, c + 1:]
        n = counts.sum()
        if n <= 1:
            raise ValueError(f"SyncBatchNorm: expected more than 1 value per channel when training, got {int(n)} "
                             f"over the group's {rows.shape[0]} ranks (input shape here {x.shape})")
        mean = (counts[:, None] * means).sum(0) / n  # Chan's combination, in rank order on every rank
        var = (m2s + counts[:, None] * np.square(means - mean)).sum(0) / n
        invstd = 1.0 / np.sqrt(var + eps)
        if running_mean is not None:
            running_mean[...] = (1 - momentum) * running_mean + momentum * mean
        if running_var is not None:
            running_var[...] = (1 - momentum) * running_var + momentum * var * (n / (n - 1))
        ctx.save_for_backward(x, weight, mean, invstd)
        ctx.n, ctx.group, ctx.has_bias = n, group, bias is not None
        return _normalize(x, weight, bias, mean, var, invstd, eps)

    @staticmethod
    def backward(ctx, g):
        from ..distributed import comm
        x, weight, mean, invstd = ctx.saved_tensors
        c = x.shape[1]
        sums = np.empty(2 * c, np.float64)
        sums[:c], sums[c:] = _grad_sums(g, x, mean)
        grad_weight = grad_bias = None
        if weight is not None and ctx.needs_input_grad[1]:
            grad_weight = (sums[c:] * invstd).astype(weight.dtype)
        if ctx.has_bias and ctx.needs_input_grad[2]:
            grad_bias = sums[:c].astype(x.dtype)
        grad_input = None
        if ctx.needs_input_grad[0]:
            comm.allreduce(sums, group=ctx.group)  # every rank that ran forward calls it, empty batch or not
            mean_dy, mean_dy_xmu = sums[:c] / ctx.n, sums[c:] / ctx.n
            # (g - mean_dy - (x - mean) * invstd^2 * mean_dy_xmu) * invstd * weight, as g * A + x * B + D
            a = invstd if weight is None else invstd * weight
            b = -a * invstd * invstd * mean_dy_xmu
            d = -a * mean_dy - b * mean
            dt = x.dtype
            gi = np.multiply(_planes(g), a.astype(dt)[None, :, None])
            gi += np.multiply(_planes(x), b.astype(dt)[None, :, None])
            gi += d.astype(dt)[None, :, None]
            grad_input = gi.reshape(x.shape)
        return grad_input, grad_weight, grad_bias, None, None, None, None, None


def _sync_group(process_group):
    """The ProcessGroup to synchronise over, or None when there is nothing to synchronise (no job, one rank)."""
    from ..distributed import comm
    if not comm.is_initialized():
        return None
    if process_group is comm.NON_GROUP_MEMBER:
        raise ValueError(f"SyncBatchNorm: process_group is GroupMember.NON_GROUP_MEMBER: global rank {comm.rank()} "
                         "is not in the group; give each rank a group it belongs to")
    if process_group is not None and not isinstance(process_group, comm.ProcessGroup):
        raise TypeError(f"SyncBatchNorm: process_group must be None (every rank) or a ProcessGroup from "
                        f"forgegrad.distributed.new_group(), got {type(process_group).__name__}")
    group = comm._group(process_group, "SyncBatchNorm")
    return group if group.size() > 1 else None


class SyncBatchNorm(_BatchNorm):
    """``SyncBatchNorm(num_features, eps=1e-5, momentum=0.1, affine=True, track_running_stats=True,
    process_group=None, device=None, dtype=None, *, bias=True)`` over (N, C, *): batch norm with statistics over
    every rank of ``process_group`` (None: the whole job) while training. torch.nn.SyncBatchNorm's arguments,
    parameters and buffers; see the module docstring for when it synchronises."""

    def __init__(self, num_features, eps=1e-5, momentum=0.1, affine=True, track_running_stats=True,
                 process_group=None, device=None, dtype=None, *, bias=True):
        super().__init__(num_features, eps, momentum, affine, track_running_stats, device, dtype, bias=bias)
        self.process_group = process_group

    def forward(self, input):
        if not isinstance(input, Tensor):
            raise TypeError(f"SyncBatchNorm: input must be a forgegrad.Tensor, got {type(input).__name__}")
        if input.ndim < 2:
            raise ValueError(f"SyncBatchNorm: expected at least 2D input (got {input.ndim}D input)")
        if input.shape[1] == 0:
            raise ValueError("SyncBatchNorm number of input channels should be non-zero")
        if input.shape[1] != self.num_features:
            raise ValueError(f"SyncBatchNorm: expected {self.num_features} channels (dim 1), got input of shape "
                             f"{tuple(input.shape)}")
        factor = self._advance()
        use_batch_stats = self.training or (self.running_mean is None and self.running_var is None)
        keep_stats = not self.training or self.track_running_stats
        running_mean = self.running_mean if keep_stats else None
        running_var = self.running_var if keep_stats else None
        group = _sync_group(self.process_group) if self.training and devices.has_data(input._data) else None
        if group is None:
            x = input
            if input.ndim > 5:  # batch_norm takes up to 5-D; the statistics per channel are those of (N, C, L)
                x = input.reshape(input.shape[0], input.shape[1], int(np.prod(input.shape[2:], dtype=np.int64)))
            out = F.batch_norm(x, running_mean, running_var, self.weight, self.bias, use_batch_stats, factor, self.eps)
            return out if out.shape == input.shape else out.reshape(input.shape)
        if not isinstance(input._data, np.ndarray):
            raise ValueError(f"SyncBatchNorm: synchronising over MPI needs CPU tensors, got one on "
                             f"{devices.device_of(input._data)}; move the model and its input to the CPU")
        return _SyncBatchNormFunction.apply(input, self.weight, self.bias,
                                            None if running_mean is None else running_mean._data,
                                            None if running_var is None else running_var._data,
                                            self.eps, factor, group)

    @classmethod
    def convert_sync_batchnorm(cls, module, process_group=None):
        """``module`` with every BatchNorm1d/2d/3d in it replaced by a SyncBatchNorm that shares its parameters and
        running statistics (torch's): a BatchNorm given as ``module`` itself comes back as a new SyncBatchNorm,
        any other module is changed in place and returned."""
        if not isinstance(module, Module):
            raise TypeError(f"SyncBatchNorm.convert_sync_batchnorm: module must be a forgegrad.nn.Module, got "
                            f"{type(module).__name__}")
        out = module
        if isinstance(module, _BatchNorm):
            from .lazy import _Uninitialized
            if any(isinstance(t, _Uninitialized) for t in (module.weight, module.running_mean)):
                raise ValueError(f"SyncBatchNorm.convert_sync_batchnorm: {type(module).__name__} has not been "
                                 "initialised yet; run a forward pass before converting it")
            out = cls(module.num_features, module.eps, module.momentum, module.affine, module.track_running_stats,
                      process_group, bias=module.bias is not None)
            if module.affine:
                out.weight = module.weight
                if module.bias is not None:
                    out.bias = module.bias
            out.running_mean = module.running_mean
            out.running_var = module.running_var
            out.num_batches_tracked = module.num_batches_tracked
            out.training = module.training
            if hasattr(module, "qconfig"):
                out.qconfig = module.qconfig
        for name, child in module.named_children():
            out.add_module(name, cls.convert_sync_batchnorm(child, process_group))
        return out
