"""F.grid_sample's arithmetic in numpy, as torch's CPU kernels compute it (the reference for every dtype; float32 4-D
bilinear / nearest run the C++ kernel forgegrad._C.grid_sample instead, with the same formulas).

torch has two CPU implementations, and each is followed here where they differ (NaN, infinities, rounding):

- 4-D inputs (float32 and float64): the vectorized kernel (aten/src/ATen/native/cpu/GridSamplerKernel.cpp). Source
  coordinates ``(g + 1) * (size - 1) / 2`` (align_corners) or ``(g + 1) * size / 2 - 0.5``; border clipping takes
  NaN to 0; reflection by ``trunc(|x - low| / twice_span)`` double flips; bilinear sums all four corners, an
  out-of-bounds one as 0 * its weight (so a NaN coordinate gives NaN); nearest rounds half to even;
- 5-D inputs: the scalar kernel (aten/src/ATen/native/GridSampler.cpp): coordinates ``((g + 1) / 2) * (size - 1)``
  or ``((g + 1) * size - 1) / 2``, clipping by std::min / std::max (NaN to size - 1), reflection by fmod, only the
  in-bounds corners summed (a NaN coordinate gives 0).

Coordinates along the grid's last axis are (x, y[, z]): x indexes the last (width) axis of the input.
Gradients: the input's gradient is every output's gradient times its corner weights, summed per input element
(np.bincount: a fixed order); the grid's is torch's per-channel sum, times d(source)/d(grid) (0 where border or
reflection clips, the sign of a reflection; nearest: 0).
"""
from __future__ import annotations

import numpy as np

A_CUBIC = -0.75


def fma(a, b, c, dt):
    """a * b + c rounded once, as torch's kernel computes these (its compiler fuses them): for float32 through
    float64, where the product is exact (the sum too, but for rare cancellations); float64 unfused (torch's fused
    result is within an ulp)."""
    if dt is np.float32:
        return (np.asarray(a, np.float64) * np.float64(b) + np.asarray(c, np.float64)).astype(dt)
    return (np.asarray(a) * b + c).astype(dt, copy=False)


# ---- source coordinates ---------------------------------------------------------------------------------------
def _clip(x, size, dt, grad, vectorized):
    """Clip to [0, size - 1]: (value, in-bounds mask for the gradient or None)."""
    mx = dt(size - 1)
    if not grad:
        if vectorized:  # clamp_min(0, x) takes NaN to 0
            r = np.where(x > 0, x, dt(0))
            return np.where(r < mx, r, mx).astype(dt, copy=False), None
        r = np.where(x < 0, dt(0), x)  # std::max(x, 0) keeps NaN, std::min(max, NaN) gives max
        return np.where(r < mx, r, mx).astype(dt, copy=False), None
    if vectorized:  # maximum / minimum propagate NaN; the borders count as outside
        lo = np.where(x > 0, x, np.where(np.isnan(x), x, dt(0)))
        r = np.minimum(lo, mx)
        return r.astype(dt, copy=False), (lo != 0) & (r != mx)
    inside = (x > 0) & (x < mx)
    r = np.where(x <= 0, dt(0), np.where(x >= mx, mx, x))
    return r.astype(dt, copy=False), inside | np.isnan(x)


def _reflect(x, size, ac, dt, grad, vectorized):
    """Reflect by the borders (align_corners: the corner pixels' centres, else their outer edges): (value, sign of
    the gradient or None)."""
    if ac and size <= 1:
        return np.zeros_like(x), (np.zeros_like(x) if grad else None)
    low = dt(0) if ac else dt(-0.5)
    if vectorized:
        ts = dt(2 * (size - 1)) if ac else dt(2 * size)
        shifted = (x - low).astype(dt, copy=False)
        a = np.abs(shifted)
        extra = fma(-np.trunc(a / ts), ts, a, dt)
        refl = (ts - extra).astype(dt, copy=False)
        if not grad:
            return (np.minimum(extra, refl) + low).astype(dt, copy=False), None
        flip = extra > refl
        val = (np.where(flip, refl, extra) + low).astype(dt, copy=False)
        return val, np.where(flip ^ (shifted < 0), dt(-1), dt(1))
    span = dt(size - 1) if ac else dt(size)
    shifted = (x - low).astype(dt, copy=False)
    a = np.abs(shifted)
    with np.errstate(invalid="ignore"):
        extra = np.fmod(a, span).astype(dt, copy=False)
        even = np.fmod(np.floor(a / span), 2) == 0
    val = np.where(even, extra + low, span - extra + low).astype(dt, copy=False)
    if not grad:
        return val, None
    sign = np.where(shifted < 0, dt(-1), dt(1))
    return val, np.where(even, sign, -sign)


def source(coord, size, padding, ac, dt, grad=False, vectorized=True, pad=True):
    """torch's source index of a grid coordinate along an input axis of ``size``: (index as a float, d index /
    d coord or None). ``pad=False``: unnormalized only (bicubic applies the padding per tap)."""
    coord = coord.astype(dt, copy=False)
    one = dt(1)
    if vectorized:
        sf = dt(size - 1) / dt(2) if ac else dt(size) / dt(2)
        x = (coord + one) * sf if ac else fma(coord + one, sf, dt(-0.5), dt)
    else:
        sf = dt(size - 1) / dt(2) if ac else dt(size) / dt(2)
        x = ((coord + one) / dt(2)) * dt(size - 1) if ac else ((coord + one) * dt(size) - one) / dt(2)
    x = x.astype(dt, copy=False)
    mult = np.full(x.shape, sf, dt) if grad else None
    if not pad or padding == "zeros":
        return x, mult
    return pad_coordinate(x, size, padding, ac, dt, grad, vectorized, mult)


def pad_coordinate(x, size, padding, ac, dt, grad=False, vectorized=True, mult=None):
    """Border / reflection applied to source indices (torch's compute_coordinates)."""
    if padding == "zeros":
        return x, mult
    if padding == "reflection":
        x, sign = _reflect(x, size, ac, dt, grad, vectorized)
        if grad:
            mult = mult * sign
    x, inside = _clip(x, size, dt, grad, vectorized)
    if grad:
        mult = np.where(inside, mult, dt(0)).astype(dt, copy=False)
    return x, mult


# ---- gather / scatter over flattened planes ---------------------------------------------------------------------
def _in_bounds(idx_f, size):
    return (idx_f >= 0) & (idx_f < size)  # False for NaN and for what torch's int conversion sends out of range


def _flat_index(ints, spatial):
    """Row-major offsets of integer-valued float arrays (masked entries clamped to 0 first)."""
    off = np.zeros(ints[0].shape, np.int64)
    for i, n in zip(ints, spatial):
        off = off * n + i
    return off


def _corner(idx_f, spatial):
    """(mask, flat offsets) of integer-valued float coordinates, ordered like ``spatial`` (D, H, W)."""
    mask = np.ones(idx_f[0].shape, bool)
    for i, n in zip(idx_f, spatial):
        mask &= _in_bounds(i, n)
    ints = [np.where(mask, i, 0).astype(np.int64) for i in idx_f]
    return mask, _flat_index(ints, spatial)


def _gather(xf, off):
    """xf (N, C, S), off (N, P) -> (N, C, P)."""
    return np.take_along_axis(xf, off[:, None, :], axis=2)


class _Scatter:
    """Sums contributions into (N, C, S) in a fixed order (np.bincount over flat positions, in float64), flushing
    its pending contributions into the total every ~2**24 of them."""

    _FLUSH = 2 ** 24

    def __init__(self, N, C, S):
        self.N, self.C, self.S = N, C, S
        self.keys, self.vals, self.pending = [], [], 0
        self.total = None

    def add(self, mask, off, contrib):
        """contrib (N, C, P) added at off (N, P) where mask (N, P)."""
        N, C = self.N, self.C
        base = (np.arange(N)[:, None, None] * C + np.arange(C)[None, :, None]) * self.S
        keys = base + off[:, None, :]
        m = np.broadcast_to(mask[:, None, :], keys.shape)
        self.keys.append(keys[m])
        self.vals.append(np.asarray(contrib, np.float64)[m])
        self.pending += self.keys[-1].size
        if self.pending >= self._FLUSH:
            self._flush()

    def _flush(self):
        if self.keys:
            part = np.bincount(np.concatenate(self.keys), np.concatenate(self.vals),
                               minlength=self.N * self.C * self.S)
            self.total = part if self.total is None else self.total + part
        self.keys, self.vals, self.pending = [], [], 0

    def result(self, dt):
        self._flush()
        if self.total is None:
            return np.zeros((self.N, self.C, self.S), dt)
        return self.total.astype(dt).reshape(self.N, self.C, self.S)


# ---- the sampler ----------------------------------------------------------------------------------------------------
_CHUNK = 2 ** 22  # values (N * C * points) per pass: the temporaries stay near a hundred MB at any grid size


def _chunks(N, C, P):
    step = max(1, _CHUNK // max(1, N * C))
    return [slice(a, min(P, a + step)) for a in range(0, P, step)]


def _setup(x, g, padding, ac, grad, mode):
    """g: (N, points, d), part of the grid."""
    N, C = x.shape[:2]
    spatial = tuple(x.shape[2:])
    d = len(spatial)
    dt = x.dtype.type
    vectorized = d == 2
    coords = [source(g[..., k], spatial[d - 1 - k], padding, ac, dt, grad, vectorized, pad=mode != "bicubic")
              for k in range(d)]
    # ordered like spatial (z, y, x)
    return N, C, spatial, d, dt, coords[::-1], x.reshape(N, C, int(np.prod(spatial)))


def _flat(x, grid):
    N, d = x.shape[0], x.ndim - 2
    P = int(np.prod(grid.shape[1:-1]))
    return grid.reshape(N, P, d), P


@np.errstate(invalid="ignore", over="ignore")  # NaN / infinite points give torch's NaNs, without warnings
def forward(x, grid, mode, padding, ac):
    N, C = x.shape[:2]
    gflat, P = _flat(x, grid)
    y = np.empty((N, C, P), x.dtype)
    for sl in _chunks(N, C, P):
        y[:, :, sl] = _forward_part(x, gflat[:, sl], mode, padding, ac)
    return y.reshape((N, C) + tuple(grid.shape[1:-1]))


def _forward_part(x, g, mode, padding, ac):
    N, C, spatial, d, dt, coords, xf = _setup(x, g, padding, ac, False, mode)
    if mode == "nearest":
        r = [np.rint(c) for c, _ in coords]
        mask, off = _corner(r, spatial)
        return np.where(mask[:, None, :], _gather(xf, off), dt(0))
    if mode == "bilinear":
        return _linear_forward(xf, coords, spatial, d, dt)
    return _cubic(xf, coords, spatial, padding, ac, dt)[0]


def _linear_parts(coords, d, dt):
    lo = [np.floor(c) for c, _ in coords]
    hi_w = [(c - f).astype(dt, copy=False) for (c, _), f in zip(coords, lo)]  # weight of the upper corner
    if d == 2:  # vectorized: e = 1 - w
        lo_w = [(dt(1) - w).astype(dt, copy=False) for w in hi_w]
    else:  # scalar: (i0 + 1) - x
        lo_w = [((f + dt(1)) - c).astype(dt, copy=False) for (c, _), f in zip(coords, lo)]
    return lo, lo_w, hi_w


def _corners(d):
    """Corner bit tuples in torch's order (the last axis, x, changes fastest): nw, ne, sw, se / tnw ... bse."""
    return [tuple((k >> (d - 1 - a)) & 1 for a in range(d)) for k in range(2 ** d)]


def _corner_weight(bits, lo_w, hi_w, d, skip=None):
    """Product of the per-axis weights; 2-D: s*e, s*w, n*e, n*w (y first), 3-D: x * y * z."""
    order = range(d) if d == 2 else range(d - 1, -1, -1)
    w = None
    for a in order:
        if a == skip:
            continue
        f = hi_w[a] if bits[a] else lo_w[a]
        w = f if w is None else w * f
    return w


def _linear_forward(xf, coords, spatial, d, dt):
    lo, lo_w, hi_w = _linear_parts(coords, d, dt)
    y = None
    for bits in _corners(d):
        mask, off = _corner([f + b for f, b in zip(lo, bits)], spatial)
        w = _corner_weight(bits, lo_w, hi_w, d)[:, None, :]
        v = _gather(xf, off)
        if d == 2:  # every corner, an outside one as 0 * weight
            term = np.where(mask[:, None, :], v, dt(0)) * w
        else:  # only the inside corners
            term = np.where(mask[:, None, :], v * w, dt(0))
        y = term if y is None else y + term
    return y


def _cubic_coeffs(t, dt):
    a = dt(A_CUBIC)
    one, two = dt(1), dt(2)

    def c2(x):
        return ((a * x - dt(5) * a) * x + dt(8) * a) * x - dt(4) * a

    def c1(x):
        return ((a + two) * x - (a + dt(3))) * x * x + one

    return [c2(t + one), c1(t), c1(one - t), c2(two - t)]


def _cubic_coeffs_grad(t, dt):
    a = dt(A_CUBIC)
    x0, x1, x2, x3 = dt(-1) - t, dt(0) - t, dt(1) - t, dt(2) - t
    return [(dt(-3) * a * x0 - dt(10) * a) * x0 - dt(8) * a,
            (dt(-3) * (a + dt(2)) * x1 - dt(2) * (a + dt(3))) * x1,
            (dt(3) * (a + dt(2)) * x2 - dt(2) * (a + dt(3))) * x2,
            (dt(3) * a * x3 - dt(10) * a) * x3 + dt(8) * a]


def _cubic_taps(coords, spatial, padding, ac, dt):
    """Per axis (y, x): floor, fraction, and the 4 padded tap positions (float, integer-valued)."""
    out = []
    for (c, _), n in zip(coords, spatial):
        f = np.floor(c)
        t = (c - f).astype(dt, copy=False)
        taps = [pad_coordinate((f + dt(k)).astype(dt, copy=False), n, padding, ac, dt)[0] for k in (-1, 0, 1, 2)]
        out.append((t, taps))
    return out


def _cubic(xf, coords, spatial, padding, ac, dt, g=None, scatter=None):
    """Bicubic forward (g None: (output,)) or backward (g (N, C, P): (grad x, grad y), the input's gradient added
    to ``scatter`` unless None)."""
    (ty, tys), (tx, txs) = _cubic_taps(coords, spatial, padding, ac, dt)
    cx, cy = _cubic_coeffs(tx, dt), _cubic_coeffs(ty, dt)
    taps = {}
    for i in range(4):
        for j in range(4):
            mask, off = _corner([tys[j], txs[i]], spatial)
            taps[i, j] = mask, off, np.where(mask[:, None, :], _gather(xf, off), dt(0))
    if g is None:
        rows = []
        for j in range(4):
            r = None
            for i in range(4):
                term = cx[i][:, None, :] * taps[i, j][2]
                r = term if r is None else r + term
            rows.append(r)
        y = None
        for j in range(4):
            term = cy[j][:, None, :] * rows[j]
            y = term if y is None else y + term
        return (y,)
    gcx, gcy = _cubic_coeffs_grad(tx, dt), _cubic_coeffs_grad(ty, dt)
    gx = np.zeros(g.shape, dt)
    gy = np.zeros(g.shape, dt)
    for i in range(4):
        for j in range(4):
            mask, off, v = taps[i, j]
            if scatter is not None:
                scatter.add(mask, off, g * cx[i][:, None, :] * cy[j][:, None, :])
            gx = gx - v * g * gcx[i][:, None, :] * cy[j][:, None, :]
            gy = gy - v * g * gcy[j][:, None, :] * cx[i][:, None, :]
    return gx.sum(axis=1), gy.sum(axis=1)


@np.errstate(invalid="ignore", over="ignore")
def backward(x, grid, g, mode, padding, ac, need_input=True, need_grid=True):
    """(grad input or None, grad grid or None) for the output gradient g."""
    N, C = x.shape[:2]
    d = x.ndim - 2
    gflat, P = _flat(x, grid)
    go = g.reshape(N, C, P).astype(x.dtype, copy=False)
    ggrid = np.zeros((N, P, d), x.dtype) if need_grid else None
    sc = _Scatter(N, C, int(np.prod(x.shape[2:]))) if need_input else None
    for sl in _chunks(N, C, P):
        part = _backward_part(x, gflat[:, sl], go[:, :, sl], mode, padding, ac, sc, need_grid)
        if need_grid:
            ggrid[:, sl] = part
    gin = sc.result(x.dtype.type).reshape(x.shape) if sc is not None else None
    return gin, (ggrid.reshape(grid.shape) if need_grid else None)


def _backward_part(x, g, gf, mode, padding, ac, sc, need_grid):
    """The grid gradient of points g (N, points, d) (None unless need_grid); their input gradient into sc."""
    N, C, spatial, d, dt, coords, xf = _setup(x, g, padding, ac, True, mode)
    if mode == "nearest":
        if sc is not None:
            mask, off = _corner([np.rint(c) for c, _ in coords], spatial)
            sc.add(mask, off, gf)
        return np.zeros(g.shape, dt) if need_grid else None
    out = np.zeros(g.shape, dt) if need_grid else None
    if mode == "bicubic":
        gx, gy = _cubic(xf, coords, spatial, padding, ac, dt, gf, sc)
        if need_grid:
            out[..., 0] = gx * (dt(spatial[1] - 1) / dt(2) if ac else dt(spatial[1]) / dt(2))
            out[..., 1] = gy * (dt(spatial[0] - 1) / dt(2) if ac else dt(spatial[0]) / dt(2))
        return out
    gc = _linear_backward(xf, coords, spatial, d, dt, gf, sc)
    if need_grid:
        for a in range(d):  # grid's last axis is (x, y, z): spatial axis a is grid component d - 1 - a
            out[..., d - 1 - a] = gc[a] * coords[a][1]
    return out


def _linear_backward(xf, coords, spatial, d, dt, gf, sc):
    lo, lo_w, hi_w = _linear_parts(coords, d, dt)
    gsum = [None] * d
    vals, masks = {}, {}
    for bits in _corners(d):
        mask, off = _corner([f + b for f, b in zip(lo, bits)], spatial)
        if sc is not None:
            sc.add(mask, off, _corner_weight(bits, lo_w, hi_w, d)[:, None, :] * gf)
        vals[bits] = np.where(mask[:, None, :], _gather(xf, off), dt(0))
        masks[bits] = mask[:, None, :]
    if d == 2:  # torch's vectorized form: gx += ((ne - nw) s + (se - sw) n) g, gy += ((sw - nw) e + (se - ne) w) g
        v = vals
        s, n = lo_w[0][:, None, :], hi_w[0][:, None, :]
        e, w = lo_w[1][:, None, :], hi_w[1][:, None, :]
        gsum[1] = (((v[0, 1] - v[0, 0]) * s + (v[1, 1] - v[1, 0]) * n) * gf).sum(axis=1)
        gsum[0] = (((v[1, 0] - v[0, 0]) * e + (v[1, 1] - v[0, 1]) * w) * gf).sum(axis=1)
    else:
        for a in range(d):
            acc = np.zeros(gf.shape, dt)
            for bits in _corners(d):
                other = _corner_weight(bits, lo_w, hi_w, d, skip=a)[:, None, :]
                # torch's scalar kernel adds only the inside corners: a NaN / inf weight of an outside one
                # (a NaN or infinite coordinate on another axis) must not reach the sum as 0 * NaN
                term = np.where(masks[bits], vals[bits] * other * gf, dt(0))
                acc = acc + term if bits[a] else acc - term
            gsum[a] = acc.sum(axis=1)
    return gsum
