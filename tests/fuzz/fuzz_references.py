"""The fuzz harness's references for ops where torch's own float32 result is not the answer: overflowing partial
sums of contractions, affine norms with infinite weights, narrow integers torch multiplies in their own dtype, torch in
float64, and the limits forgegrad gives by design at infinite or NaN inputs where torch gives garbage. Used by
fuzz_worker.run_op after the comparison with torch's float32 result failed."""
from __future__ import annotations

import numpy as np

import forgegrad as fg


def partial_sum_overflow(name, args, kwargs):
    """Per output of a contraction, where a float32 partial sum may pass float's range (|a| @ |b| in
    float64 beyond it), or None. There the float32 value depends on the order of the sum, FMA and SIMD
    lanes (inf + -inf is NaN, inf - 1e38 stays inf): torch's own matmul gives NaN for a one-row
    product and inf for an eight-row one on the same values, so no float32 result is the reference."""
    big = float(np.finfo(np.float32).max)

    def a(x):
        return np.abs(np.asarray(x, np.float64))

    try:
        with np.errstate(all="ignore"):
            if name == "matmul":
                return [np.matmul(a(args[0]), a(args[1])) > big]
            if name == "scaled_dot_product_attention":
                q, k, v = args[:3]
                scale = kwargs.get("scale")
                scale = 1.0 / np.sqrt(q.shape[-1]) if scale is None else float(scale)
                rows = (np.matmul(a(q) * abs(scale), np.swapaxes(a(k), -1, -2)) > big).any(-1, keepdims=True)
                return [rows | (a(v).sum(-2, keepdims=True) > big)]  # P @ v: P's rows sum to 1
            if name == "recurrent_layer" and kwargs.get("mode", "lstm") in ("lstm", "gru", "rnn_tanh"):
                x, h0, c0, w_ih, w_hh, b_ih, b_hh = args[:7]
                h = max(1.0, float(a(h0).max(initial=0.0)) if h0 is not None else 0.0)  # |h_t| <= 1 after a step
                pre = np.matmul(a(x), a(w_ih).T) + (0.0 if b_ih is None else a(b_ih))
                rec = a(w_hh).sum(1) * h + (0.0 if b_hh is None else a(b_hh))
                rows = (pre > big).any((0, 2)) | (rec > big).any()  # per batch row: all its steps after
                T, B, H = x.shape[0], x.shape[1], w_hh.shape[1]
                return [np.broadcast_to(rows[None, :, None], (T, B, H))] + [np.broadcast_to(rows[:, None], (B, H))] * 2
            if name == "cross":  # each component a1 b2 - a2 b1: either product past float's range
                x, y = a(args[0]), a(args[1])
                dim = args[2] if len(args) > 2 and isinstance(args[2], int) else kwargs.get("dim", -1)
                p = [np.roll(x, -i, axis=dim) * np.roll(y, -j, axis=dim) for i, j in ((1, 2), (2, 1))]
                return [np.maximum(*p) > big]
            if name in _CONTRACTIONS:  # the op itself on |inputs| in float64: each output's largest partial sum
                import torch
                t = [torch.from_numpy(a(x)) if isinstance(x, np.ndarray) and x.dtype.kind == "f" else x for x in args]
                return [np.asarray(fg.ops.get(name).torch(torch, *t, **kwargs).detach().numpy()) > big]
    except (ValueError, TypeError, IndexError, AttributeError, RuntimeError):  # shapes a mutation broke: no excuse
        return None
    return None


# convolutions and linear: a sum of products per output, as matmul's (the seed-909 run's conv1d of 3e38 weights:
# forgegrad's float32 -inf where the float64 sum is -2e38, torch's float32 -inf or NaN by its own order)
_CONTRACTIONS = {"conv1d", "conv2d", "conv3d", "conv_transpose1d", "conv_transpose2d", "conv_transpose3d", "linear"}


# the norms' (weight, bias) positions and the axis a weight entry scales (None: the trailing normalized dims)
_AFFINE_ARGS = {"group_norm": (2, 3, 1), "batch_norm": (3, 4, 1), "instance_norm": (3, 4, 1),
                "layer_norm": (2, 3, None)}


def unfolded_affine(op, torch, args, kwargs):
    """For a norm with an infinite weight or bias entry: x_hat * weight + bias in float64, x_hat from torch without
    the affine part (a torch Tensor), or None. torch folds the affine into scale = rstd * w, shift = b - mean * scale,
    and x * scale + shift is inf - inf = NaN where the formula gives +-inf (group_norm of a -inf weight: torch's
    NaN or -inf depends on the sign of the group's mean); forgegrad computes the formula as written."""
    spec = _AFFINE_ARGS.get(op.name)
    if spec is None:
        return None
    wi, bi, axis = spec
    w, b = (args[i] if i < len(args) else None for i in (wi, bi))
    if not any(isinstance(a, np.ndarray) and a.dtype.kind == "f" and not np.isfinite(a).all() for a in (w, b)):
        return None
    plain = list(args)
    plain[wi] = plain[bi] = None
    t = [torch.from_numpy(np.array(a, np.float64) if a.dtype.kind == "f" else np.array(a)) if isinstance(a, np.ndarray)
         else a for a in plain]
    try:
        xhat = op.torch(torch, *t, **kwargs).detach().numpy()
        y = xhat
        for v, apply in ((w, np.multiply), (b, np.add)):
            if v is not None:
                v = np.asarray(v, np.float64)
                y = apply(y, v if axis is None else v.reshape((-1,) + (1,) * (xhat.ndim - 2)))
    except Exception:  # noqa: BLE001  shapes a mutation broke: no reference
        return None
    return torch.from_numpy(np.ascontiguousarray(y))


def accept_overflow(got, want, masks):
    """want with got's non-finite values where masks say a partial sum may overflow."""
    single = not isinstance(want, (tuple, list))
    gots, wants = ([got], [want]) if single else (list(got), list(want))
    out = []
    for g, w, m in zip(gots, wants, masks):
        g = np.asarray(g._data if isinstance(g, fg.Tensor) else g)
        w = np.array(w.detach().numpy() if hasattr(w, "detach") else w, np.float64)
        if g.shape == w.shape:
            at = np.broadcast_to(m, g.shape) & ~np.isfinite(g)
            w[at] = g[at]
        out.append(w)
    return out[0] if single else out + wants[len(out):]


def torch_wide_ints(op, torch, got, args, tkw):
    """For a floating result of 8- / 16-bit integer arrays: torch on them as int64 (floats as float64), or None.
    torch multiplies such integers in their own dtype before promoting (cosine_embedding_loss of uint8 255s: -64.98
    where int64 inputs give 0.634, the seed-909 run), wrapping where the math does not."""
    g = got._data if isinstance(got, fg.Tensor) else got
    if getattr(g, "dtype", None) is None or g.dtype.kind != "f" or not any(
            isinstance(a, np.ndarray) and a.dtype.kind in "iu" and a.dtype.itemsize <= 2 for a in args):
        return None
    t_args = [torch.from_numpy(np.array(a, np.int64 if a.dtype.kind in "iu" else np.float64 if a.dtype.kind == "f"
                                        else a.dtype)) if isinstance(a, np.ndarray) else a for a in args]
    try:
        return op.torch(torch, *t_args, **tkw)
    except Exception:  # noqa: BLE001  (no such reference: the failure stands)
        return None


def torch64(op, torch, args, aliases, tkw):
    t_args = [torch.from_numpy(np.array(a, np.float64)) if isinstance(a, np.ndarray) and a.dtype.kind == "f"
              else torch.from_numpy(np.array(a)) if isinstance(a, np.ndarray) else a for a in args]
    for (ci, ki), (cj, kj) in aliases:
        if ci is args and cj is args and args[ki] is args[kj]:
            t_args[kj] = t_args[ki]
    try:
        return op.torch(torch, *t_args, **tkw)
    except Exception:  # noqa: BLE001  (no float64 path: the float32 comparison stands)
        return None


# Where forgegrad gives the limit at an infinite input by design and torch does not (each pinned by a
# kernel test): gelu(+inf) = +inf (torch's vectorized loop gives NaN, its scalar tail and float64 give inf).
# (silu(-inf) is NaN as torch's since 940d4531, tests/test_silu_kernels.py: its -0 entry here had made the
# seed-101 run report forgegrad's NaN as a mismatch.)
# fake_quantize of NaN is torch's quant_min bound (test_fuzz_regressions.py, test_fake_quantize_takes_nan_to_torchs_
# bound; a NaN -> NaN entry here, left from before that fix, had made the seed-909 run report torch's own value as
# a mismatch); fake_quantize_per_channel of +-inf (or of a value whose quotient by the scale is past 2**62) is the
# upper / lower bound as torch's per-tensor kernel gives, where torch's per-channel kernel casts the quotient to an
# integer (per_channel_bounds).
LIMITS = {"gelu": {np.inf: np.inf}, "fake_quantize_per_channel_affine": {}}


def per_channel_bounds(args, want):
    """want with fake_quantize_per_channel's saturated values where x / scale is past 2**62 (or inf)."""
    x, scale, zero_point, axis, lo, hi = args[:6]
    if not all(isinstance(a, np.ndarray) for a in (x, scale, zero_point)) or x.dtype.kind != "f" or \
            not all(isinstance(v, int) for v in (axis, lo, hi)) or not -x.ndim <= axis < x.ndim or \
            scale.shape != (x.shape[axis],) or zero_point.shape != scale.shape:
        return want
    shape = [1] * x.ndim
    shape[axis] = -1
    s, z = scale.astype(np.float32).reshape(shape), zero_point.astype(np.float32).reshape(shape)
    with np.errstate(all="ignore"):
        q = x.astype(np.float32) * (np.float32(1) / s)  # past 2**62: torch's cast to int64 is undefined too
        for sign, bound in ((1, hi), (-1, lo)):
            at = np.broadcast_to(sign * q > 2.0 ** 62, want.shape)
            want[at] = np.broadcast_to((np.float32(bound) - z) * s, want.shape)[at]
    return want


def as_stored(a, raw):
    """The array as an op sees it: a tensor (not raw) holds integer data as int64."""
    a = np.array(a)
    return a.astype(np.int64) if not raw and a.dtype.kind in "iu" else a


def float32_range(got, want):
    """A float64 reference beyond float32's range is float32's overflow, +-inf, for a float32 result."""
    g = got._data if isinstance(got, fg.Tensor) else got
    if getattr(g, "dtype", None) != np.float32 or not hasattr(want, "numpy"):
        return want
    w = want.detach().numpy().copy()
    big = np.abs(w) > np.finfo(np.float32).max
    w[big] = np.copysign(np.inf, w[big])
    return w


# torch's orthogonal polynomials of a NaN x from degree 2 on are finite garbage (chebyshev_polynomial_u(NaN, 2):
# -1.09e23 in torch 2.13; the seed-909 run's six ops; shifted T from degree 7, where its recurrence starts), where
# forgegrad's recurrence gives NaN
POLYNOMIALS = {"special_chebyshev_polynomial_u", "special_chebyshev_polynomial_w", "special_laguerre_polynomial_l",
               "special_legendre_polynomial_p", "special_shifted_chebyshev_polynomial_t",
               "special_shifted_chebyshev_polynomial_u", "special_shifted_chebyshev_polynomial_w"}


def nan_polynomial(args, want):
    x, n = args[:2]
    if not isinstance(x, np.ndarray) or x.dtype.kind != "f":
        return want
    want = want.detach().numpy().copy()
    try:
        at = np.broadcast_to(np.isnan(x), want.shape) & np.broadcast_to(np.asarray(n) >= 2, want.shape)
    except ValueError:  # shapes a mutation broke: the reference as it is
        return want
    want[at] = np.nan
    return want


def limits(name, args, want):
    if name in POLYNOMIALS and len(args) > 1 and hasattr(want, "numpy"):
        return nan_polynomial(args, want)
    if name not in LIMITS or not args or not isinstance(args[0], np.ndarray) or not hasattr(want, "numpy"):
        return want
    want = want.detach().numpy().copy()
    x = args[0]
    if want.shape != x.shape:
        return want
    for at, value in LIMITS[name].items():
        want[np.isnan(x) if np.isnan(at) else x == at] = value
    return per_channel_bounds(args, want) if name == "fake_quantize_per_channel_affine" else want
