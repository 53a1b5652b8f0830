"""float64 Functions of the ops whose main CPU kernels are float32 only: conv2d, the pools, batch / layer /
RMS norm and the recurrent layer. Each computes and saves in float64: conv2d as C++ im2col / col2im
(forgegrad.kernels.float64) around numpy's dgemm, max_pool2d on _C.pool's double kernel, the LSTM on the
C++ cell with its GEMMs batched over time; the norms, the other pools and GRU / RNN cells in numpy.
Every forward first runs the op's shape rule on its arguments, so the errors are the float32 op's own;
mixed float32 / float64 arguments raise as torch does (these kernels take one dtype), never a silent cast.
"""
from __future__ import annotations

import numpy as np

from .. import _C
from ..autograd import Function, is_grad_enabled
from ..kernels import float64 as K64
from ..kernels.geometry import adaptive_output_size, conv2d_geometry, pool2d_geometry
from . import _window3d as W
from .conv import conv1d_function
from .registry import _OPS


def _validate(name, *args, **kwargs):
    """The op's shape rule on the real arguments: its checks and error messages, once."""
    _OPS[name].meta(*args, **kwargs)


def _one_dtype(name, *arrays):
    kinds = {a.dtype for a in arrays if isinstance(a, np.ndarray) and a.dtype.kind == "f"}
    if len(kinds) > 1:
        raise RuntimeError(f"{name}: expected all floating arguments to have the same dtype (torch does not "
                           f"promote here), found {', '.join(sorted(str(k) for k in kinds))}")


def _window(start, step, count):
    """The slice of positions start, start + step, ... (count of them)."""
    return slice(start, start + step * (count - 1) + 1, step)


# ---- conv2d ----------------------------------------------------------------------------------------------
# im2col (C++: forgegrad.kernels.float64) and one dgemm per group and batch chunk; backward: the weight gradient
# is a dgemm against the same columns, the input gradient a dgemm then col2im (C++, a fixed order per plane).
_COLS_BUDGET = 1 << 23  # doubles of im2col columns per chunk of images (64 MiB): bounds the extra memory


def _conv_plan(x_shape, weight_shape, geo):
    """(images per chunk, kernel taps, (OH, OW), (pad top, pad left))."""
    N, C = x_shape[:2]
    KK = weight_shape[2] * weight_shape[3]
    OH, OW = geo.output_shape[2:]
    per_image = max(1, C * KK * OH * OW)
    return max(1, min(N, _COLS_BUDGET // per_image)), KK, (OH, OW), (geo.padding[0], geo.padding[2])


def _conv_cols(x, weight, geo, pad):
    return K64.im2col(x, weight.shape[2:], geo.stride, pad, geo.dilation, geo.output_shape[2:])


def _rows_to_nchw(y2, n, oc, p):
    """(OC, n*P) GEMM output as an (n, OC, P) view of its columns."""
    return y2.reshape(oc, n, p).transpose(1, 0, 2)


class Conv2d64Function(Function):
    """conv2d as im2col + dgemm (see above); groups split the columns' rows and the weight's output channels."""

    @staticmethod
    def forward(ctx, x, weight, bias=None, stride=1, padding=0, dilation=1, groups=1):
        _validate("conv2d", x, weight, bias, stride, padding, dilation, groups)
        _one_dtype("conv2d", x, weight, bias)
        geo = conv2d_geometry(x.shape, weight.shape, stride, padding, dilation, groups)
        G = geo.groups
        N, OC, OH, OW = geo.output_shape
        P = OH * OW
        if x.dtype != np.float64 or N == 0 or P == 0 or OC == 0 or x.shape[1] == 0:
            y = _conv2d_taps(x, weight, geo)  # not float64 or empty: the reference's tap loop
            if bias is not None:
                y = y + bias[:, None]
        else:
            y = np.empty((N, OC, P))
            nb, KK, out_hw, pad = _conv_plan(x.shape, weight.shape, geo)
            Cg, OCg = x.shape[1] // G, OC // G
            w2 = weight.reshape(G, OCg, Cg * KK)
            for n0 in range(0, N, nb):
                n1 = min(N, n0 + nb)
                cols = _conv_cols(x[n0:n1], weight, geo, pad)
                y2 = np.empty((OC, (n1 - n0) * P))
                for g in range(G):
                    np.matmul(w2[g], cols[g * Cg * KK:(g + 1) * Cg * KK], out=y2[g * OCg:(g + 1) * OCg])
                if bias is None:
                    y[n0:n1] = _rows_to_nchw(y2, n1 - n0, OC, P)
                else:
                    np.add(_rows_to_nchw(y2, n1 - n0, OC, P), bias[:, None], out=y[n0:n1])
        y = y.reshape(N, OC, OH, OW)
        ctx.save_for_backward(x, weight)
        ctx.geo, ctx.has_bias = geo, bias is not None
        return y

    @staticmethod
    def backward(ctx, g):
        x, weight = ctx.saved_tensors
        geo = ctx.geo
        N, OC, OH, OW = geo.output_shape
        P, G = OH * OW, geo.groups
        if x.dtype != np.float64 or g.dtype != np.float64 or N == 0 or P == 0 or OC == 0 or x.shape[1] == 0:
            return _conv2d_taps_backward(ctx, x, weight, g)
        nb, KK, out_hw, pad = _conv_plan(x.shape, weight.shape, geo)
        Cg, OCg = x.shape[1] // G, OC // G
        w2 = weight.reshape(G, OCg, Cg * KK)
        need_x, need_w = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        gx = np.empty(x.shape) if need_x else None
        gw = np.zeros((G, OCg, Cg * KK)) if need_w else None
        g3 = g.reshape(N, OC, P)
        for n0 in range(0, N, nb):
            n1 = min(N, n0 + nb)
            gt = np.ascontiguousarray(g3[n0:n1].transpose(1, 0, 2)).reshape(OC, (n1 - n0) * P)
            cols = _conv_cols(x[n0:n1], weight, geo, pad) if need_w else None
            gcols = np.empty((x.shape[1] * KK, (n1 - n0) * P)) if need_x else None
            for k in range(G):
                gk, rows = gt[k * OCg:(k + 1) * OCg], slice(k * Cg * KK, (k + 1) * Cg * KK)
                if need_w:
                    gw[k] += gk @ cols[rows].T
                if need_x:
                    np.matmul(w2[k].T, gk, out=gcols[rows])
            if need_x:
                K64.col2im(gcols, (n1 - n0,) + x.shape[1:], weight.shape[2:], geo.stride, pad, geo.dilation, out_hw,
                           out=gx[n0:n1])
        gb = g.sum(axis=(0, 2, 3)) if ctx.has_bias else None
        return gx, (gw.reshape(weight.shape) if need_w else None), gb


def _conv2d_taps(x, weight, geo):
    """The numpy reference: per kernel offset (i, j), a strided view of the padded input times that weight
    column, as a batched matmul per group (any dtype; the oracle of the im2col path's tests)."""
    (t, b, le, r), G = geo.padding, geo.groups
    N, OC, OH, OW = geo.output_shape
    xp = np.pad(x, ((0, 0), (0, 0), (t, b), (le, r)))
    xg = xp.reshape(N, G, x.shape[1] // G, *xp.shape[2:])
    wg = weight.reshape(G, OC // G, *weight.shape[1:])
    y = np.zeros((N, G, OC // G, OH * OW), np.result_type(x, weight))
    for i in range(weight.shape[2]):
        for j in range(weight.shape[3]):
            xs = xg[..., _window(i * geo.dilation[0], geo.stride[0], OH), _window(j * geo.dilation[1],
                                                                                  geo.stride[1], OW)]
            y += np.matmul(wg[..., i, j], xs.reshape(N, G, -1, OH * OW))
    return y.reshape(N, OC, OH * OW)


def _conv2d_taps_backward(ctx, x, weight, g):
    """The numpy reference's backward: the transposed products added back into the same views."""
    geo = ctx.geo
    (t, b, le, r), G = geo.padding, geo.groups
    N, OC, OH, OW = geo.output_shape
    xp = np.pad(x, ((0, 0), (0, 0), (t, b), (le, r)))
    xg = xp.reshape(N, G, x.shape[1] // G, *xp.shape[2:])
    wg = weight.reshape(G, OC // G, *weight.shape[1:])
    gg = g.reshape(N, G, OC // G, OH * OW)
    gxp = np.zeros_like(xg)
    gw = np.zeros_like(wg)
    for i in range(weight.shape[2]):
        for j in range(weight.shape[3]):
            rows = _window(i * geo.dilation[0], geo.stride[0], OH)
            cols = _window(j * geo.dilation[1], geo.stride[1], OW)
            xs = xg[..., rows, cols].reshape(N, G, -1, OH * OW)
            gw[..., i, j] = np.matmul(gg, np.swapaxes(xs, -1, -2)).sum(axis=0)
            gxp[..., rows, cols] += np.matmul(np.swapaxes(wg[..., i, j], -1, -2), gg).reshape(N, G, -1, OH, OW)
    H, W = x.shape[2:]
    gx = gxp.reshape(xp.shape)[:, :, t:t + H, le:le + W]
    gb = g.sum(axis=(0, 2, 3)) if ctx.has_bias else None
    return np.ascontiguousarray(gx), gw.reshape(weight.shape), gb


# ---- pools ----------------------------------------------------------------------------------------------
# The N-d numpy window code of _window3d (the 3-D pools' own), on the 2-D geometry (the same field names).
class MaxPool2d64Function(W.IndexedPool):
    """Max over each window, the first maximum winning (torch's order), and its flat index h * W + w."""

    @staticmethod
    def forward(ctx, x, kernel_size=2, stride=None, padding=0, dilation=1, ceil_mode=False):
        _validate("max_pool2d", x, kernel_size, stride, padding, dilation, ceil_mode)
        geo = pool2d_geometry(x.shape, kernel_size, stride, padding, dilation, ceil_mode, owner="max_pool2d")
        if x.dtype != np.float64:
            return W.IndexedPool.saving(ctx, x, *W.max_pool(x, geo))
        # the C++ general loop (pool.cpp, templated on the element type): the same windows, ties and NaN rule
        y, idx = np.empty(geo.output_shape), np.empty(geo.output_shape, np.int64)
        _C.pool.max_pool2d_forward(np.ascontiguousarray(x), y, idx, geo.kernel_size, geo.stride, geo.padding,
                                   geo.dilation, ceil_mode)
        return W.IndexedPool.saving(ctx, x, y, idx)


class AvgPool2d64Function(Function):
    """Window sums over the zero-padded input, divided as torch's kernel divides (padding counted up to
    the padded border, or only the input's part, or divisor_override)."""

    @staticmethod
    def forward(ctx, x, kernel_size=2, stride=None, padding=0, ceil_mode=False, count_include_pad=True,
                divisor_override=None):
        _validate("avg_pool2d", x, kernel_size, stride, padding, ceil_mode, count_include_pad, divisor_override)
        geo = pool2d_geometry(x.shape, kernel_size, stride, padding, 1, ceil_mode, owner="avg_pool2d")
        div = W.avg_divisor(geo, x.shape[2:], count_include_pad, divisor_override)
        ctx.geo, ctx.div, ctx.in_shape = geo, div, x.shape
        return W.avg_pool(x, geo, div)

    @staticmethod
    def backward(ctx, g):
        return W.avg_pool_backward(g, ctx.geo, ctx.div, ctx.in_shape)


class AdaptiveAvgPool2d64Function(Function):
    """Mean over torch's adaptive bins [floor(i*n/o), ceil((i+1)*n/o))."""

    @staticmethod
    def forward(ctx, x, output_size=1):
        _validate("adaptive_avg_pool2d", x, output_size)
        ctx.in_shape = x.shape
        return W.adaptive_avg(x, adaptive_output_size(output_size, x.shape[2:]))

    @staticmethod
    def backward(ctx, g):
        return W.adaptive_avg_backward(g, ctx.in_shape)


# ---- normalisation ----------------------------------------------------------------------------------------
def _trailing_axes(x, normalized_shape):
    n = 1 if isinstance(normalized_shape, (int, np.integer)) else len(tuple(normalized_shape))
    return tuple(range(x.ndim - n, x.ndim))


class LayerNorm64Function(Function):
    @staticmethod
    def forward(ctx, x, normalized_shape, weight=None, bias=None, eps=1e-5):
        _validate("layer_norm", x, normalized_shape, weight, bias, eps=eps)
        _one_dtype("layer_norm", x, weight, bias)
        axes = _trailing_axes(x, normalized_shape)
        mean = x.mean(axis=axes, keepdims=True)
        xc = x - mean
        rstd = 1.0 / np.sqrt((xc * xc).mean(axis=axes, keepdims=True) + eps)
        xhat = xc * rstd
        y = xhat if weight is None else xhat * weight
        if bias is not None:
            y = y + bias
        ctx.save_for_backward(xhat, rstd, weight)
        ctx.axes, ctx.has_bias = axes, bias is not None
        return y

    @staticmethod
    def backward(ctx, g):
        xhat, rstd, weight = ctx.saved_tensors
        axes = ctx.axes
        lead = tuple(range(g.ndim - len(axes)))
        gh = g if weight is None else g * weight
        gx = rstd * (gh - gh.mean(axis=axes, keepdims=True) - xhat * (gh * xhat).mean(axis=axes, keepdims=True))
        gw = (g * xhat).sum(axis=lead) if weight is not None else None
        gb = g.sum(axis=lead) if ctx.has_bias else None
        return gx, None, gw, gb


class RMSNorm64Function(Function):
    @staticmethod
    def forward(ctx, x, normalized_shape, weight=None, eps=None):
        _validate("rms_norm", x, normalized_shape, weight, eps=eps)
        _one_dtype("rms_norm", x, weight)
        axes = _trailing_axes(x, normalized_shape)
        if eps is None:
            eps = np.finfo(x.dtype).eps  # torch: the input dtype's machine epsilon
        rstd = 1.0 / np.sqrt((x * x).mean(axis=axes, keepdims=True) + eps)
        y = x * rstd
        ctx.save_for_backward(x, rstd, weight)
        ctx.axes = axes
        return y if weight is None else y * weight

    @staticmethod
    def backward(ctx, g):
        x, rstd, weight = ctx.saved_tensors
        axes = ctx.axes
        lead = tuple(range(g.ndim - len(axes)))
        gh = g if weight is None else g * weight
        gx = rstd * gh - x * rstd ** 3 * (gh * x).mean(axis=axes, keepdims=True)
        gw = (g * x * rstd).sum(axis=lead) if weight is not None else None
        return gx, None, gw


class BatchNorm64Function(Function):
    """Statistics over every axis but 1; training updates running_mean / running_var in place (unbiased
    variance), as torch."""

    @staticmethod
    def forward(ctx, x, running_mean=None, running_var=None, weight=None, bias=None, training=False,
                momentum=0.1, eps=1e-5):
        _validate("batch_norm", x, running_mean, running_var, weight, bias, training, momentum, eps)
        _one_dtype("batch_norm", x, running_mean, running_var, weight, bias)
        axes = (0,) + tuple(range(2, x.ndim))
        shape = (1, -1) + (1,) * (x.ndim - 2)
        if training:
            mean = x.mean(axis=axes)
            var = ((x - mean.reshape(shape)) ** 2).mean(axis=axes)
            n = x.size // x.shape[1]
            if running_mean is not None:
                running_mean *= 1 - momentum
                running_mean += momentum * mean
            if running_var is not None:
                running_var *= 1 - momentum
                running_var += momentum * var * (n / (n - 1))
        else:
            mean, var = running_mean, running_var
        invstd = 1.0 / np.sqrt(var + eps)
        xhat = (x - mean.reshape(shape)) * invstd.reshape(shape)
        # torch's transform: y = x * alpha + beta, alpha = invstd * weight, beta = bias - mean * alpha (so an inf x
        # in a channel of infinite variance gives NaN, as torch's and the float32 kernel's)
        alpha = invstd if weight is None else invstd * weight
        beta = -mean * alpha if bias is None else bias - mean * alpha
        y = x * alpha.reshape(shape) + beta.reshape(shape)
        ctx.save_for_backward(xhat, invstd, weight)
        ctx.training, ctx.axes, ctx.shape, ctx.has_bias = bool(training), axes, shape, bias is not None
        return y

    @staticmethod
    def backward(ctx, g):
        xhat, invstd, weight = ctx.saved_tensors
        axes, shape = ctx.axes, ctx.shape
        gb = g.sum(axis=axes)
        gw = (g * xhat).sum(axis=axes)
        scale = invstd if weight is None else invstd * weight
        if ctx.training:
            n = g.size // g.shape[1]
            gx = scale.reshape(shape) / n * (n * g - gb.reshape(shape) - xhat * gw.reshape(shape))
        else:
            gx = g * scale.reshape(shape)
        return (gx, None, None, gw if weight is not None else None, gb if ctx.has_bias else None)


# ---- the recurrent layer ----------------------------------------------------------------------------------
def _sigmoid(a):
    return 0.5 * (1.0 + np.tanh(0.5 * a))


class RecurrentLayer64Function(Function):
    """One layer, one direction, torch's gate order (LSTM i, f, g, o; GRU r, z, n); backpropagation
    through time from the saved per-step gates."""

    @staticmethod
    def forward(ctx, x, h0, c0, w_ih, w_hh, b_ih, b_hh, mode="lstm", reverse=False):
        _validate("recurrent_layer", x, h0, c0, w_ih, w_hh, b_ih, b_hh, mode=mode, reverse=reverse)
        _one_dtype("recurrent layer", x, h0, c0 if mode == "lstm" else None, w_ih, w_hh, b_ih, b_hh)
        T, B, _ = x.shape
        H = w_hh.shape[1]
        lstm = mode == "lstm"
        if lstm and x.dtype == np.float64 and T > 0 and B > 0 and H > 0:
            return _lstm_forward(ctx, x, h0, c0, w_ih, w_hh, b_ih, b_hh, reverse)
        h = np.zeros((B, H), x.dtype) if h0 is None else h0
        c = (np.zeros((B, H), x.dtype) if c0 is None else c0) if lstm else None
        xw = np.matmul(x, w_ih.T) + (0 if b_ih is None else b_ih)
        bh = 0 if b_hh is None else b_hh
        y = np.empty((T, B, H), x.dtype)
        steps = []
        for t in (range(T - 1, -1, -1) if reverse else range(T)):
            hw = h @ w_hh.T + bh
            if lstm:
                gi, gh = xw[t], hw
                a = gi + gh
                i, f, o = _sigmoid(a[:, :H]), _sigmoid(a[:, H:2 * H]), _sigmoid(a[:, 3 * H:])
                gg = np.tanh(a[:, 2 * H:3 * H])
                c_new = f * c + i * gg
                tc = np.tanh(c_new)
                steps.append((t, h, c, i, f, gg, o, tc))
                h, c = o * tc, c_new
            elif mode == "gru":
                r = _sigmoid(xw[t][:, :H] + hw[:, :H])
                z = _sigmoid(xw[t][:, H:2 * H] + hw[:, H:2 * H])
                hn = hw[:, 2 * H:]
                n = np.tanh(xw[t][:, 2 * H:] + r * hn)
                steps.append((t, h, r, z, n, hn))
                h = (1 - z) * n + z * h
            else:
                a = xw[t] + hw
                h_new = np.tanh(a) if mode == "rnn_tanh" else np.maximum(a, 0)
                steps.append((t, h, h_new))
                h = h_new
            y[t] = h
        if is_grad_enabled() and any(ctx.needs_input_grad):
            ctx.steps, ctx.x, ctx.w = steps, x, (w_ih, w_hh)
        ctx.mode, ctx.has = mode, (h0 is not None, c0 is not None, b_ih is not None, b_hh is not None)
        return (y, h, c) if lstm else (y, h)

    @staticmethod
    def backward(ctx, grad_y, grad_hn, grad_cn=None):
        if getattr(ctx, "lstm64", None) is not None:
            return _lstm_backward(ctx, grad_y, grad_hn, grad_cn)
        x, (w_ih, w_hh), mode = ctx.x, ctx.w, ctx.mode
        gx = np.zeros_like(x)
        gwi, gwh = np.zeros_like(w_ih), np.zeros_like(w_hh)
        gbi = np.zeros(w_ih.shape[0], x.dtype)
        gbh = np.zeros(w_hh.shape[0], x.dtype)
        dh = grad_hn.copy()
        dc = grad_cn.copy() if mode == "lstm" else None
        for step in reversed(ctx.steps):
            t, h_prev = step[0], step[1]
            dh = dh + grad_y[t]
            if mode == "lstm":
                _, _, c_prev, i, f, gg, o, tc = step
                dc = dc + dh * o * (1 - tc * tc)
                d_in = np.concatenate([dc * gg * i * (1 - i), dc * c_prev * f * (1 - f), dc * i * (1 - gg * gg),
                                       dh * tc * o * (1 - o)], axis=1)
                d_h = d_in
                dc = dc * f
            elif mode == "gru":
                _, _, r, z, n, hn = step
                dn = dh * (1 - z) * (1 - n * n)
                dr = dn * hn * r * (1 - r)
                dz = dh * (h_prev - n) * z * (1 - z)
                d_in = np.concatenate([dr, dz, dn], axis=1)
                d_h = np.concatenate([dr, dz, dn * r], axis=1)
                dh = dh * z
            else:
                h_new = step[2]
                d_in = dh * ((1 - h_new * h_new) if mode == "rnn_tanh" else (h_new > 0))
                d_h = d_in
            if mode == "lstm" or mode.startswith("rnn"):
                dh = np.zeros_like(dh)
            dh = dh + d_h @ w_hh
            gwh += d_h.T @ h_prev
            gbh += d_h.sum(axis=0)
            gwi += d_in.T @ x[t]
            gbi += d_in.sum(axis=0)
            gx[t] = d_in @ w_ih
        has_h0, has_c0, has_bih, has_bhh = ctx.has
        return (gx, dh if has_h0 else None, dc if has_c0 and mode == "lstm" else None, gwi, gwh,
                gbi if has_bih else None, gbh if has_bhh else None)


def _lstm_forward(ctx, x, h0, c0, w_ih, w_hh, b_ih, b_hh, reverse):
    """The float64 LSTM: the input product for every step in one dgemm, per step the recurrent dgemm and the C++
    cell (forgegrad.kernels.float64); saves the gate activations, cells and tanh(cells) of every step."""
    T, B, _ = x.shape
    H = w_hh.shape[1]
    h = np.zeros((B, H)) if h0 is None else np.ascontiguousarray(h0)
    c = np.zeros((B, H)) if c0 is None else np.ascontiguousarray(c0)
    h_first, c_first = h, c
    xw = np.matmul(x, w_ih.T)
    if b_ih is not None:
        xw += b_ih
    w_hh_t = w_hh.T
    acts, cells, tcs = np.empty((T, B, 4 * H)), np.empty((T, B, H)), np.empty((T, B, H))
    y = np.empty((T, B, H))
    a = np.empty((B, 4 * H))
    for t in (range(T - 1, -1, -1) if reverse else range(T)):
        np.matmul(h, w_hh_t, out=a)
        if b_hh is not None:
            a += b_hh
        np.add(xw[t], a, out=a)
        K64.lstm_cell_forward(a, c, acts[t], cells[t], tcs[t], y[t])
        h, c = y[t], cells[t]
    if is_grad_enabled() and any(ctx.needs_input_grad):
        ctx.lstm64 = (x, w_ih, w_hh, acts, cells, tcs, y, h_first, c_first, reverse)
    ctx.mode, ctx.has = "lstm", (h0 is not None, c0 is not None, b_ih is not None, b_hh is not None)
    return y, h.copy(), c.copy()


def _lstm_backward(ctx, grad_y, grad_hn, grad_cn):
    """Backpropagation through time: per step the C++ cell backward and one dgemm for the recurrent gradient;
    the weight, bias and input gradients of all steps at once afterwards (three dgemms and two sums)."""
    x, w_ih, w_hh, acts, cells, tcs, y, h_first, c_first, reverse = ctx.lstm64
    T, B, _ = x.shape
    H = w_hh.shape[1]
    order = range(T) if reverse else range(T - 1, -1, -1)  # backward through the forward's order
    prev = (lambda t: t + 1) if reverse else (lambda t: t - 1)
    first = T - 1 if reverse else 0
    dh = np.array(grad_hn, np.float64, copy=True, order="C")
    dc = np.array(grad_cn, np.float64, copy=True, order="C")
    d = np.empty((T, B, 4 * H))
    # W_hh in column-major order: OpenBLAS packs it for d (B, 4H) @ W_hh ~1.5x faster than the row-major array
    # (51 vs 76 us a step at B 16, H 128), worth the one copy
    w_hh_f = np.asfortranarray(w_hh)
    for t in order:
        dh = dh + grad_y[t]
        c_prev = c_first if t == first else cells[prev(t)]
        K64.lstm_cell_backward(acts[t], c_prev, tcs[t], dh, dc, d[t])
        dh = d[t] @ w_hh_f
    h_prev = np.empty((T, B, H))  # the h each step read
    if reverse:
        h_prev[:-1], h_prev[-1] = y[1:], h_first
    else:
        h_prev[1:], h_prev[0] = y[:-1], h_first
    d2 = d.reshape(T * B, 4 * H)
    gwh = d2.T @ h_prev.reshape(T * B, H)
    gwi = d2.T @ x.reshape(T * B, -1)
    gb = d2.sum(axis=0)
    gx = (d2 @ w_ih).reshape(x.shape)
    has_h0, has_c0, has_bih, has_bhh = ctx.has
    return (gx, dh if has_h0 else None, dc if has_c0 else None, gwi, gwh, gb if has_bih else None,
            gb.copy() if has_bhh else None)


FUNCTIONS = {"conv2d": Conv2d64Function, "conv1d": conv1d_function(Conv2d64Function, "float64"),
             "max_pool2d": MaxPool2d64Function, "avg_pool2d": AvgPool2d64Function,
             "adaptive_avg_pool2d": AdaptiveAvgPool2d64Function, "layer_norm": LayerNorm64Function,
             "rms_norm": RMSNorm64Function, "batch_norm": BatchNorm64Function,
             "recurrent_layer": RecurrentLayer64Function}
