"""The chunked engine of linear_cross_entropy (ops/linear_cross_entropy.py): rows of the input in chunks, so the
(N, C) logits are never held whole.

Per chunk of r rows: ``z = x_c @ W^T (+ b)`` on forgegrad's SGEMM into a reused (r, C*D) buffer, the per-row losses
from the fused cross-entropy kernel (kernels/loss.py; numpy for float64 and probability targets), and, when
gradients are wanted, in the same pass ``G = (softmax - target) * scale`` written over the kernel's softmax buffer,
then ``dX_c = G @ W`` and ``dW += G^T @ x_c`` (``db += colsum(G)``). Partial sums (dW, db, the class weight's
gradient) are added chunk after chunk in row order; the loss is the sum of the per-row losses in one fixed order, so
no result depends on the thread count, and the loss not on the chunk size either.

K-dimensional loss (``out_features`` (d1, ..., dK), D = their product): the logits of a row are (C, D); the softmax
runs over C for each of the D positions, so a chunk's (r, C*D) logits are regrouped as (r*D, C) rows for the
kernel and the gradient back.
"""
from __future__ import annotations

import numpy as np

from .. import _C

_F32 = np.dtype(np.float32)
# default chunk (options=None): each chunk buffer holds at most this many bytes of logits
CHUNK_BYTES = 16 << 20


class Problem:
    """The arguments of one call, checked and laid out as 2-D arrays (see linear_cross_entropy.prepare)."""

    __slots__ = ("x2", "w2", "b", "C", "D", "N", "y", "t", "w", "ignore_index", "eps", "dt", "rows")

    def __init__(self, x2, w2, b, C, D, y, t, w, ignore_index, eps):
        self.x2, self.w2, self.b, self.C, self.D = x2, w2, b, C, D
        self.N = x2.shape[0]
        self.y, self.t, self.w = y, t, w  # y (N*D,) int64 index targets, else t (N, C, D) probabilities
        self.ignore_index, self.eps = ignore_index, eps
        self.dt = x2.dtype
        self.rows = 1

    @property
    def kernel(self) -> bool:
        """float32 with class-index targets: the C++ cross-entropy kernel; else numpy in the input's dtype."""
        return self.dt == _F32 and self.t is None

    def denominator(self) -> float:
        """reduction='mean' divides by the summed class weights of the rows not ignored (index targets), by the
        number of loss positions (probability targets); in float64, in row order."""
        if self.t is not None:
            return float(self.N * self.D)
        valid = self.y != self.ignore_index
        if self.w is None:
            return float(np.count_nonzero(valid))
        return float(np.where(valid, self.w[np.where(valid, self.y, 0)].astype(np.float64), 0.0).sum())


def _gemm(a, b, out, trans_a=False, trans_b=False, beta=0.0):
    """out = op(a) @ op(b) + beta * out: forgegrad's SGEMM for float32, numpy for float64."""
    if out.dtype == _F32:
        _C.gemm.matmul(a, b, out, trans_a, trans_b, 1.0, beta)
        return
    a = a.T if trans_a else a
    b = b.T if trans_b else b
    if beta == 0.0:
        np.matmul(a, b, out=out)
    else:
        out += a @ b


class Grads:
    """The gradient buffers a pass fills (None: not wanted). ``out``: them in the arguments' shapes (input,
    linear_weight, target, linear_bias, weight), arrays that own their memory (autograd adopts them as a leaf's
    .grad without a copy); dx, dw, db, dt_ are the engine's 2-D / (N, C, D) views of them."""

    def __init__(self, p: Problem, shapes, need_x, need_w, need_t, need_b, need_cw):
        dt = p.dt
        x_s, w_s, t_s, b_s = shapes
        fx = np.empty(x_s, dt) if need_x else None
        fw = np.zeros(w_s, dt) if need_w else None
        fb = np.zeros(b_s, dt) if need_b and p.b is not None else None
        ft = np.empty(t_s, dt) if need_t and p.t is not None else None
        self.dcw = np.zeros(p.C, dt) if need_cw and p.t is not None and p.w is not None else None
        self.out = (fx, fw, ft, fb, self.dcw)
        self.dx = None if fx is None else fx.reshape(p.x2.shape)
        self.dw = None if fw is None else fw.reshape(p.w2.shape)
        self.db = None if fb is None else fb.reshape(-1)
        self.dt_ = None if ft is None else ft.reshape(p.t.shape)

    @property
    def any(self) -> bool:
        return any(g is not None for g in (self.dx, self.dw, self.db, self.dt_, self.dcw))


def run(p: Problem, loss_rows, grads: Grads | None = None, scale: float = 1.0, grad_rows=None) -> None:
    """One pass over the chunks: per-row losses into ``loss_rows`` ((N*D,) in the input's dtype) and, with
    ``grads``, the gradients of the loss weighted by ``scale`` (and by ``grad_rows`` (N*D,), the upstream
    gradient of reduction='none')."""
    want = grads is not None and grads.any
    N, C, D, r = p.N, p.C, p.D, min(p.rows, max(p.N, 1))
    CD = C * D
    zbuf = np.empty((r, CD), p.dt)
    pbuf = np.empty((r * D, C), p.dt)
    tbuf = np.empty((r * D, C), p.dt) if D > 1 else None  # the (r*D, C) regrouping of z when D > 1
    for n0 in range(0, N, r):
        n1 = min(N, n0 + r)
        k = n1 - n0
        xc = p.x2[n0:n1]
        z = zbuf[:k]
        _gemm(xc, p.w2, z, trans_b=True)
        if p.b is not None:
            z += p.b
        rows = z
        if D > 1:
            rows = tbuf[:k * D]
            rows.reshape(k, D, C)[...] = z.reshape(k, C, D).transpose(0, 2, 1)
        lo = loss_rows[n0 * D:n1 * D]
        gl = grad_rows[n0 * D:n1 * D] if grad_rows is not None else None
        prob = pbuf[:k * D]
        g = _chunk_kernel(p, rows, n0, n1, lo, prob, want, scale, gl) if p.kernel else \
            _chunk_numpy(p, rows, n0, n1, lo, want, scale, gl, grads)
        if not want:
            continue
        if D > 1:  # back to the (k, C*D) layout of the logits
            z.reshape(k, C, D)[...] = g.reshape(k, D, C).transpose(0, 2, 1)
            g = z
        if grads.dx is not None:
            _gemm(g, p.w2, grads.dx[n0:n1])
        if grads.dw is not None:
            _gemm(g, xc, grads.dw, trans_a=True, beta=1.0)
        if grads.db is not None:
            grads.db += g.sum(axis=0)


def _chunk_kernel(p, rows, n0, n1, loss, prob, want, scale, grad_loss):
    y = p.y[n0 * p.D:n1 * p.D]
    _C.loss.cross_entropy_forward(rows, y, p.w, p.ignore_index, p.eps, prob, loss)
    if want:  # d loss / d logits over the softmax, in place
        _C.loss.cross_entropy_backward(prob, y, p.w, p.ignore_index, p.eps, grad_loss, scale, prob)
    return prob


def _chunk_numpy(p, z, n0, n1, loss, want, scale, grad_loss, grads):
    """The kernel's arithmetic in numpy, in the input's dtype: float64, and probability targets."""
    dt, C = p.dt, p.C
    eps = dt.type(p.eps)
    m = z.max(axis=1, keepdims=True)
    e = np.exp(z - m)
    s = e.sum(axis=1, keepdims=True)
    logp = z - m - np.log(s)
    w = np.ones(C, dt) if p.w is None else p.w
    if p.t is None:
        y = p.y[n0 * p.D:n1 * p.D]
        valid = y != p.ignore_index
        ys = np.where(valid, y, 0)
        wy = np.where(valid, w[ys], 0).astype(dt)
        ar = np.arange(len(ys))
        per = (1 - eps) * np.where(valid, -logp[ar, ys], 0) * wy
        if eps > 0:  # 0 for an ignored row even where its logits are NaN / inf (torch's masked_fill)
            per = per + eps / C * np.where(valid, -(logp * w).sum(axis=1), 0)
        loss[...] = per
        if not want:
            return None
        a = dt.type(scale) if grad_loss is None else (dt.type(scale) * grad_loss)[:, None]
        # as the kernel: an ignored row's upstream gradient is 0 (not 0 * the infinite scale of a mean over no
        # row), yet (torch's g - p * sum g) it still meets p and, with smoothing, the class weights
        coef = (1 - eps) * wy + ((eps / C) * w.sum() if eps > 0 else 0)
        d = e / s * coef[:, None]
        d[ar, ys] -= (1 - eps) * wy
        if eps > 0:
            d -= (eps / C) * w[None, :]
        with np.errstate(invalid="ignore"):
            d *= np.where(valid[:, None], a, 0)
        return d
    # class probabilities: t (k, C, D) -> (k*D, C) rows, smoothed
    tc = p.t[n0:n1]
    t = tc.transpose(0, 2, 1).reshape(-1, C)
    tt = t * (1 - eps) + eps / C if eps > 0 else t
    tw = tt * w
    loss[...] = -(tw * logp).sum(axis=1)
    if not want:
        return None
    a = dt.type(scale) if grad_loss is None else (dt.type(scale) * grad_loss)[:, None]
    if grads.dt_ is not None:  # d loss / d target: -(1 - eps) w logp, back to (k, C, D)
        gt = -(1 - eps) * w * logp * a
        grads.dt_[n0:n1] = gt.reshape(n1 - n0, p.D, C).transpose(0, 2, 1)
    if grads.dcw is not None:  # d loss / d weight_c: -sum over rows of tt_c logp_c
        grads.dcw -= (tt * logp * a).sum(axis=0)
    d = e / s * tw.sum(axis=1, keepdims=True) - tw
    d *= a
    return d
