"""Inverse, determinants, linear solves and the matrix exponential (torch.linalg's inv, det, slogdet, solve,
solve_triangular, matrix_exp), batched over leading dims, float32/float64. numpy.linalg (LAPACK) computes the
forward; the gradients are torch's formulas (ops/_linalg_common.py), each also written with Tensor ops for
create_graph (double backward). Singular inputs to inv/solve raise LinAlgError naming the argument, as torch."""
from __future__ import annotations

import numpy as np

from ..autograd import Function
from . import _linalg_common as C
from . import _linalg_nonfinite as NF
from . import _meta as M
from . import _onnx_linalg as L
from ._util import unbroadcast
from .registry import BadInput, Sample, register_op

NO_ONNX = "ONNX (opset 21) has no {} operator"


def _arg(args, kwargs, i, name, default=None):
    return args[i] if i < len(args) else kwargs.get(name, default)


def _square_meta(op, name="A"):
    def meta(a, *args, **kwargs):
        C.check_matrix(a, name, op)
        return M.MetaArray(a.shape, a.dtype)
    return meta


def _cubic_flops(out, inputs, kwargs):
    a = inputs[0]
    return 2 * int(np.prod(a.shape[:-2], dtype=np.int64)) * a.shape[-1] ** 3


def _singular(a, op, name):
    """The LinAlgError for a singular ``a`` (torch's wording: it names the batch element)."""
    bad = np.linalg.matrix_rank(a.astype(np.float64)) < a.shape[-1] if a.size else np.zeros(a.shape[:-2], bool)
    where = C.batch_index(np.asarray(bad)) if np.any(bad) else ""
    return C.LinAlgError(f"{op}:{where} argument '{name}' is singular (not invertible); use linalg.pinv or "
                         "linalg.lstsq for a rank-deficient matrix")


def inv_array(a, op="linalg.inv", name="A"):
    if NF.nonfinite(a).any():
        return _inv_with_nonfinite(a, op, name)
    try:
        return np.linalg.inv(a)
    except np.linalg.LinAlgError:
        raise _singular(a, op, name) from None


def _inv_with_nonfinite(a, op, name):
    """inv of a batch with matrices holding inf / NaN: those as torch computes them (ops/_linalg_nonfinite.py),
    the others by numpy; a zero pivot is torch's 'singular' (no rank by SVD: LAPACK's SVD of an inf does not
    return)."""
    n = a.shape[-1]
    flat = a.reshape(-1, n, n)
    mask = NF.nonfinite(flat)
    out = np.empty_like(flat)
    singular = np.zeros(mask.shape, bool)
    if (~mask).any():
        try:
            out[~mask] = np.linalg.inv(flat[~mask])
        except np.linalg.LinAlgError:
            singular[~mask] = np.linalg.matrix_rank(flat[~mask].astype(np.float64)) < n
    for i in np.flatnonzero(mask):
        inv, singular[i] = NF.inv_nonfinite(flat[i])
        if inv is not None:
            out[i] = inv
    if singular.any():
        where = C.batch_index(singular.reshape(a.shape[:-2])) if a.ndim > 2 else ""
        raise C.LinAlgError(f"{op}:{where} argument '{name}' is singular (not invertible); use linalg.pinv or "
                            "linalg.lstsq for a rank-deficient matrix")
    return out.reshape(a.shape)


# ---- inv ---------------------------------------------------------------------------------------------------------
def _inv_samples():
    return [Sample((C.wellcond(4, 4),)), Sample((C.wellcond(2, 3, 5, 5, seed=1),), name="batched (2,3,5,5)"),
            Sample((C.wellcond(1, 1, seed=2),), name="1x1"), Sample((C.wellcond(7, 7, seed=3),), name="7x7")]


def _inv_rule(ctx, args, kwargs, g):
    return (C.inv_backward(C.TS, C.TS.inv(args[0]), g),)


@register_op("linalg_inv", meta=_square_meta("linalg.inv"), flops=_cubic_flops, samples=_inv_samples,
             torch=lambda torch, A: torch.linalg.inv(A), differentiable_backward=_inv_rule,
             bad_inputs=lambda: [C.square_bad(),
                                 BadInput((np.ones((3, 3), np.float32),), {}, C.LinAlgError, "'A' is singular")],
             onnx=L.inv_onnx, tol=(1e-4, 1e-5))
class LinalgInvFunction(Function):
    """A^-1; gradient -A^-T g A^-T."""

    exact_dtype = True

    @staticmethod
    def forward(ctx, A):
        C.check_matrix(A, "A", "linalg.inv")
        out = inv_array(A)
        ctx.save_for_backward(out)
        return out

    @staticmethod
    def backward(ctx, g):
        (ainv,) = ctx.saved_tensors
        return C.inv_backward(C.NP, ainv, g).astype(g.dtype, copy=False)


# ---- det / slogdet -----------------------------------------------------------------------------------------------
def _batch_meta(op):
    def meta(a, *args, **kwargs):
        C.check_matrix(a, "A", op)
        return M.MetaArray(a.shape[:-2], a.dtype)
    return meta


def _det_grad_any(a, g):
    """g * d det / dA for any A (singular included): det(U) det(Vh) U diag(prod_{j != i} S_j) Vh."""
    if not np.isfinite(a).all():  # (LAPACK's SVD of an inf never returns): NaN, as torch's gradient there
        return np.full(a.shape, np.nan)
    u, s, vh = np.linalg.svd(a.astype(np.float64))
    n = s.shape[-1]
    others = np.stack([np.prod(np.delete(s, i, axis=-1), axis=-1) for i in range(n)], -1) if n > 1 else np.ones_like(s)
    sign = np.linalg.det(u) * np.linalg.det(vh)
    return (g * sign)[..., None, None] * (u * others[..., None, :]) @ vh


def _det_samples():
    return [Sample((C.wellcond(4, 4),)), Sample((C.wellcond(2, 3, 5, 5, seed=1),), name="batched (2,3,5,5)"),
            Sample((C.wellcond(1, 1, seed=2),), name="1x1"),
            Sample((C.wellcond(3, 3, seed=3) * np.float32(-1),), name="negative det")]


def _det_onnx(ctx, op):
    return [ctx.node("Det", [op.input("A", np.float32)])]


def _det_rule(ctx, args, kwargs, g):
    from .registry import _OPS
    a = args[0]
    return (C.det_backward(C.TS, C.TS.inv(a), _OPS["linalg_det"](a), g),)


@register_op("linalg_det", meta=_batch_meta("linalg.det"), flops=_cubic_flops, samples=_det_samples,
             torch=lambda torch, A: torch.linalg.det(A), onnx=_det_onnx, differentiable_backward=_det_rule,
             bad_inputs=lambda: [C.square_bad()], tol=(1e-4, 1e-5))
class LinalgDetFunction(Function):
    """det(A); gradient g det A^-T, or for an exactly singular A the cofactor matrix through the SVD (torch's
    create_graph path; its plain backward returns 0 there). The double-backward rule needs an invertible A."""

    exact_dtype = True

    @staticmethod
    def forward(ctx, A):
        C.check_matrix(A, "A", "linalg.det")
        with np.errstate(invalid="ignore", over="ignore"):
            det = np.asarray(NF.det_into(A, np.linalg.det(A)), A.dtype)
        ctx.save_for_backward(A, det)
        return det

    @staticmethod
    def backward(ctx, g):
        a, det = ctx.saved_tensors
        if a.shape[-1] == 1:  # the cofactor of a 1x1 matrix is 1, whatever its entry (NaN / inf too, as torch's)
            return np.array(np.broadcast_to(np.asarray(g)[..., None, None], a.shape), dtype=g.dtype)
        try:
            ainv = np.linalg.inv(a)
        except np.linalg.LinAlgError:
            return _det_grad_any(a, g).astype(g.dtype)
        return C.det_backward(C.NP, ainv, det, g).astype(g.dtype, copy=False)


def _slogdet_meta(a, *args, **kwargs):
    C.check_matrix(a, "A", "linalg.slogdet")
    return M.MetaArray(a.shape[:-2], a.dtype), M.MetaArray(a.shape[:-2], a.dtype)


def _slogdet_rule(ctx, args, kwargs, gsign, glog):
    a = args[0]
    return (C.TS.scalar_mat(glog) * C.TS.mT(C.TS.inv(a)),)


@register_op("linalg_slogdet", meta=_slogdet_meta, flops=_cubic_flops, samples=_det_samples,
             torch=lambda torch, A: tuple(torch.linalg.slogdet(A)), differentiable_backward=_slogdet_rule,
             bad_inputs=lambda: [C.square_bad()], onnx=L.slogdet_onnx, tol=(1e-4, 1e-5))
class LinalgSlogdetFunction(Function):
    """(sign(det A), log|det A|); the gradient of logabsdet is A^-T (sign has none)."""

    exact_dtype = True  # sign records a (zero) gradient, as torch's output does

    @staticmethod
    def forward(ctx, A):
        C.check_matrix(A, "A", "linalg.slogdet")
        with np.errstate(invalid="ignore"):
            sign, logabs = NF.slogdet_into(A, *np.linalg.slogdet(A))
        sign = np.where(np.isnan(logabs), 0.0, sign)  # torch's sign of a NaN determinant
        ctx.save_for_backward(A)
        return np.asarray(sign, A.dtype), np.asarray(logabs, A.dtype)

    @staticmethod
    def backward(ctx, gsign, glog):
        (a,) = ctx.saved_tensors
        return (glog[..., None, None] * np.swapaxes(inv_array(a, "linalg.slogdet"), -1, -2)).astype(glog.dtype)


# ---- solve -------------------------------------------------------------------------------------------------------
def solve_shapes(a_shape, b_shape, left, op="linalg.solve"):
    """(vector case, output shape) of solve(A, B), torch's rule: B is a batch of vectors when it is 1-d or has
    A's shape without the last dim."""
    n = a_shape[-1]
    vector = len(b_shape) == 1 or (len(b_shape) == len(a_shape) - 1 and tuple(b_shape) == tuple(a_shape[:-1]))
    if vector and not left:
        raise ValueError(f"{op}: argument 'B' is a vector, which left=False does not take (torch neither): pass "
                         "it as a (..., 1, n) matrix")
    bm = tuple(b_shape) + (1,) if vector else tuple(b_shape)
    if len(bm) < 2 or (bm[-2] if left else bm[-1]) != n:
        raise ValueError(f"{op}: argument 'B' of shape {tuple(b_shape)} does not fit A of shape {tuple(a_shape)} "
                         f"({'rows' if left else 'columns'} must be {n})")
    try:
        batch = np.broadcast_shapes(tuple(a_shape[:-2]), bm[:-2])
    except ValueError:
        raise ValueError(f"{op}: the batch dims of A {tuple(a_shape[:-2])} and B {bm[:-2]} do not broadcast") from None
    out = batch + bm[-2:]
    return vector, (out[:-1] if vector else out)


def _solve_meta(a, b, left=True):
    C.check_matrix(a, "A", "linalg.solve")
    return M.MetaArray(solve_shapes(a.shape, b.shape, left)[1], a.dtype)


def _solve_samples():
    return [Sample((C.wellcond(4, 4), np.random.default_rng(1).uniform(-1, 1, (4, 3)).astype(np.float32))),
            Sample((C.wellcond(2, 3, 5, 5, seed=1), np.random.default_rng(2).uniform(-1, 1, (3, 5, 2)).astype(
                np.float32)), name="batched, B broadcast"),
            Sample((C.wellcond(3, 3, seed=2), np.random.default_rng(3).uniform(-1, 1, 3).astype(np.float32)),
                   name="vector B"),
            Sample((C.wellcond(2, 4, 4, seed=3), np.random.default_rng(4).uniform(-1, 1, (2, 4)).astype(np.float32)),
                   name="batch of vectors"),
            Sample((C.wellcond(4, 4, seed=4), np.random.default_rng(5).uniform(-1, 1, (2, 4)).astype(np.float32)),
                   {"left": False}, "left=False"),
            Sample((C.wellcond(1, 1, seed=5), np.ones((1, 1), np.float32)), name="1x1")]


def _solve_rule(ctx, args, kwargs, g):
    from .registry import _OPS
    from ._double_backward import _sum_to
    a, b = args[0], args[1]
    left = _arg(args, kwargs, 2, "left", True)
    vector, _ = solve_shapes(a.shape, b.shape, left)
    x = _OPS["linalg_solve"](a, b, left=left)
    if vector:
        x, g = x.unsqueeze(-1), g.unsqueeze(-1)
    gb, ga = C.solve_backward(C.TS, a, x, g, left)
    gb = gb.squeeze(-1) if vector else gb
    return _sum_to(ga, a.shape), _sum_to(gb, b.shape)


@register_op("linalg_solve", meta=_solve_meta, flops=_cubic_flops, samples=_solve_samples,
             torch=lambda torch, A, B, left=True: torch.linalg.solve(A, B, left=left),
             differentiable_backward=_solve_rule,
             bad_inputs=lambda: [C.square_bad(lambda a: (a, np.ones((2, 1), np.float32))),
                                 BadInput((np.ones((3, 3), np.float32), np.ones((3, 1), np.float32)), {},
                                          C.LinAlgError, "'A' is singular"),
                                 BadInput((np.eye(3, dtype=np.float32), np.ones((4, 1), np.float32)), {}, ValueError,
                                          "'B'")],
             onnx=L.solve_onnx, tol=(1e-4, 1e-5))
class LinalgSolveFunction(Function):
    """X with A X = B (left) or X A = B; gB = A^-T g, gA = -gB X^T (batch dims broadcast, B a vector or matrix)."""

    exact_dtype = True

    @staticmethod
    def forward(ctx, A, B, left=True):
        left = C.check_bool(left, "left", "linalg.solve")
        C.check_matrix(A, "A", "linalg.solve")
        C.check_matrix(B, "B", "linalg.solve", square=False, at_least=1)
        vector, _ = solve_shapes(A.shape, B.shape, left)
        if A.dtype != B.dtype:  # torch refuses to promote here
            raise RuntimeError(f"linalg.solve: expected A and B to have the same dtype, but found A of type {A.dtype} "
                               f"and B of type {B.dtype}")
        bm = B[..., None] if vector else B
        try:
            x = np.linalg.solve(A, bm) if left else np.swapaxes(
                np.linalg.solve(np.swapaxes(A, -1, -2), np.swapaxes(bm, -1, -2)), -1, -2)
        except np.linalg.LinAlgError:
            raise _singular(A, "linalg.solve", "A") from None
        bad = ~np.isfinite(A).all(axis=(-2, -1))
        if bad.any():  # an inf or NaN in A: NaN for its whole system, as torch's; OpenBLAS's LU can leave finite
            # numbers there (an infinite column solved as if it were a limit)
            x = np.array(x, copy=True)
            x[np.broadcast_to(bad, x.shape[:-2])] = np.nan
        ctx.save_for_backward(A, x)
        ctx.info = (vector, left, B.shape)
        return x[..., 0] if vector else x

    @staticmethod
    def backward(ctx, g):
        a, x = ctx.saved_tensors
        vector, left, b_shape = ctx.info
        if vector:
            g = g[..., None]
        gb, ga = C.solve_backward(C.NP, a, x, g, left, ctx.needs_input_grad[0])
        gb = unbroadcast(gb[..., 0] if vector else gb, b_shape).astype(g.dtype, copy=False)
        ga = None if ga is None else unbroadcast(ga, a.shape).astype(g.dtype, copy=False)
        return ga, gb


# ---- solve_triangular --------------------------------------------------------------------------------------------
def _tri_shape(a_shape, b_shape, left):
    n = a_shape[-1]
    if len(b_shape) < 2 or (b_shape[-2] if left else b_shape[-1]) != n:
        raise ValueError(f"linalg.solve_triangular: argument 'B' of shape {tuple(b_shape)} does not fit A of shape "
                         f"{tuple(a_shape)} (B must be a (..., {n}, k) matrix for left=True, (..., k, {n}) else)")
    try:
        return np.broadcast_shapes(tuple(a_shape[:-2]), tuple(b_shape[:-2])) + tuple(b_shape[-2:])
    except ValueError:
        raise ValueError(f"linalg.solve_triangular: the batch dims of A {tuple(a_shape[:-2])} and B "
                         f"{tuple(b_shape[:-2])} do not broadcast") from None


def _tri_meta(a, b, upper=None, left=True, unitriangular=False):
    C.check_matrix(a, "A", "linalg.solve_triangular")
    return M.MetaArray(_tri_shape(a.shape, b.shape, left), a.dtype)


def _tri_samples():
    rng = np.random.default_rng(0)

    def b(*s):
        return rng.uniform(-1, 1, s).astype(np.float32)
    return [Sample((C.wellcond(4, 4), b(4, 3)), {"upper": False}, "lower"),
            Sample((C.wellcond(4, 4, seed=1), b(4, 2)), {"upper": True}, "upper"),
            Sample((C.wellcond(2, 3, 5, 5, seed=2), b(3, 5, 2)), {"upper": True}, "batched, B broadcast"),
            Sample((C.wellcond(4, 4, seed=3), b(2, 4)), {"upper": False, "left": False}, "left=False"),
            Sample((C.wellcond(4, 4, seed=4), b(4, 3)), {"upper": True, "unitriangular": True}, "unitriangular"),
            Sample((C.wellcond(1, 1, seed=5), b(1, 1)), {"upper": False}, "1x1")]


def _tri_rule(ctx, args, kwargs, g):
    from .registry import _OPS
    from ._double_backward import _sum_to
    a, bt = args[0], args[1]
    upper = _arg(args, kwargs, 2, "upper")
    left, unit = _arg(args, kwargs, 3, "left", True), _arg(args, kwargs, 4, "unitriangular", False)
    x = _OPS["linalg_solve_triangular"](a, bt, upper=upper, left=left, unitriangular=unit)
    gb, ga = C.solve_tri_backward(C.TS, a, x, g, upper, left, unit)
    return _sum_to(ga, a.shape), _sum_to(gb, bt.shape)


def solve_tri_array(A, B, upper, left, unitriangular):
    n = A.shape[-1]
    if unitriangular:
        A = (np.triu(A, 1) if upper else np.tril(A, -1)) + np.eye(n, dtype=A.dtype)
    try:
        return C.NP.solve_tri(A, B, upper, left)
    except np.linalg.LinAlgError:
        raise C.LinAlgError("linalg.solve_triangular: argument 'A' has a zero on its diagonal (singular); torch "
                            "returns inf/NaN there, forgegrad refuses it") from None


@register_op("linalg_solve_triangular", meta=_tri_meta, flops=lambda o, i, k: _cubic_flops(o, i, k) // 2,
             samples=_tri_samples, differentiable_backward=_tri_rule,
             torch=lambda torch, A, B, upper=None, left=True, unitriangular=False: torch.linalg.solve_triangular(
                 A, B, upper=upper, left=left, unitriangular=unitriangular),
             bad_inputs=lambda: [C.square_bad(lambda a: (a, np.ones((2, 1), np.float32)), kwargs={"upper": True}),
                                 BadInput((np.eye(3, dtype=np.float32), np.ones((3, 1), np.float32)), {}, TypeError,
                                          "upper"),
                                 BadInput((np.eye(3, dtype=np.float32), np.ones(3, np.float32)), {"upper": True},
                                          ValueError, "'B'")],
             onnx=L.solve_triangular_onnx, tol=(1e-4, 1e-5))
class LinalgSolveTriangularFunction(Function):
    """X with A X = B (left) or X A = B, A triangular (only its ``upper`` / lower triangle read; the diagonal
    read as ones when ``unitriangular``); gA masked to that triangle, as torch's."""

    exact_dtype = True

    @staticmethod
    def forward(ctx, A, B, upper=None, left=True, unitriangular=False):
        if not isinstance(upper, bool):
            raise TypeError("linalg.solve_triangular: keyword argument 'upper' (a bool) is required, as in torch")
        left = C.check_bool(left, "left", "linalg.solve_triangular")
        unitriangular = C.check_bool(unitriangular, "unitriangular", "linalg.solve_triangular")
        C.check_matrix(A, "A", "linalg.solve_triangular")
        C.check_matrix(B, "B", "linalg.solve_triangular", square=False)
        _tri_shape(A.shape, B.shape, left)
        B = B.astype(A.dtype, copy=False)  # torch computes in A's dtype (B's gradient still has B's)
        x = solve_tri_array(A, B, upper, left, unitriangular)
        ctx.save_for_backward(A, x)
        ctx.info = (upper, left, unitriangular, B.shape)
        return x

    @staticmethod
    def backward(ctx, g):
        a, x = ctx.saved_tensors
        upper, left, unit, b_shape = ctx.info
        gb, ga = C.solve_tri_backward(C.NP, a, x, g, upper, left, unit, ctx.needs_input_grad[0])
        ga = None if ga is None else unbroadcast(ga, a.shape).astype(g.dtype, copy=False)
        return ga, unbroadcast(gb, b_shape).astype(g.dtype, copy=False)


for _fn in (LinalgInvFunction, LinalgDetFunction, LinalgSlogdetFunction, LinalgSolveFunction,
            LinalgSolveTriangularFunction):
    _fn.op.float64 = _fn  # numpy in the input's dtype


# ---- matrix_exp --------------------------------------------------------------------------------------------------
_PADE13 = (64764752532480000., 32382376266240000., 7771770303897600., 1187353796428800., 129060195264000.,
           10559470521600., 670442572800., 33522128640., 1323241920., 40840800., 960960., 16380., 182., 1.)
_THETA13 = 5.371920351148152


def expm_array(a):
    """exp(A) by scaling and squaring with the degree-13 Pade approximant (Higham 2005), in float64, batched
    (each matrix scaled by its own power of 2)."""
    x = a.astype(np.float64)
    if x.size == 0:
        return x.astype(a.dtype)
    norm = np.abs(x).sum(axis=-2).max(axis=-1)  # the 1-norm of each matrix
    with np.errstate(divide="ignore", invalid="ignore"):
        s = np.ceil(np.log2(np.maximum(norm, 1e-300) / _THETA13))
    # a NaN / inf matrix is not scaled (its exponential is NaN, as torch's; the cast would warn)
    s = np.where(np.isfinite(s), np.maximum(s, 0), 0).astype(np.int64)
    with np.errstate(over="ignore", invalid="ignore"):  # inf / NaN results are the answer there, as torch's
        return _expm_scaled(x, s).astype(a.dtype, copy=False)


def _expm_scaled(x, s):
    n = x.shape[-1]
    x = x / (2.0 ** s)[..., None, None]
    b = _PADE13
    eye = np.eye(n)
    x2 = x @ x
    x4 = x2 @ x2
    x6 = x4 @ x2
    u = x @ (x6 @ (b[13] * x6 + b[11] * x4 + b[9] * x2) + b[7] * x6 + b[5] * x4 + b[3] * x2 + b[1] * eye)
    v = x6 @ (b[12] * x6 + b[10] * x4 + b[8] * x2) + b[6] * x6 + b[4] * x4 + b[2] * x2 + b[0] * eye
    r = np.linalg.solve(v - u, v + u)
    for k in range(int(s.max()) if s.size else 0):
        r = np.where((s > k)[..., None, None], r @ r, r)
    return r


def _expm_block(B, a, g, expm):
    """torch's backward of an analytic matrix function: exp([[A^T, g], [0, A^T]]) top-right block."""
    n = a.shape[-1]
    at = B.mT(a)
    top = B.cat([at, g], -1)
    bottom = B.cat([g * 0.0, at], -1)
    return B.narrow(B.narrow(expm(B.cat([top, bottom], -2)), -2, 0, n), -1, n, n)


def _expm_samples():
    rng = np.random.default_rng(0)

    def m(*s, scale=1.0):
        return (rng.uniform(-1, 1, s) * scale).astype(np.float32)
    return [Sample((m(4, 4),)), Sample((m(2, 3, 5, 5, scale=0.5),), name="batched (2,3,5,5)"),
            Sample((m(1, 1),), name="1x1"), Sample((m(2, 3, 3, scale=4.0),), name="large norm (scaled and squared)")]


def _expm_rule(ctx, args, kwargs, g):
    from .registry import _OPS
    return (_expm_block(C.TS, args[0], g, _OPS["linalg_matrix_exp"]),)


@register_op("linalg_matrix_exp", meta=_square_meta("linalg.matrix_exp"), flops=lambda o, i, k: 9 * _cubic_flops(
             o, i, k), samples=_expm_samples, torch=lambda torch, A: torch.linalg.matrix_exp(A),
             differentiable_backward=_expm_rule, bad_inputs=lambda: [C.square_bad()],
             onnx=L.matrix_exp_onnx, tol=(1e-4, 1e-5))
class LinalgMatrixExpFunction(Function):
    """exp(A) (Pade 13 with scaling and squaring); gradient: the block-matrix exponential, as torch's."""

    exact_dtype = True

    @staticmethod
    def forward(ctx, A):
        C.check_matrix(A, "A", "linalg.matrix_exp")
        ctx.save_for_backward(A)
        if A.shape[-1] == 1:  # torch's shortcut: the scalar exp (exp(inf) = inf, where Pade's squaring gives NaN)
            with np.errstate(over="ignore"):
                return np.exp(A)
        return expm_array(A)

    @staticmethod
    def backward(ctx, g):
        (a,) = ctx.saved_tensors
        return _expm_block(C.NP, a, g.astype(a.dtype, copy=False), expm_array).astype(g.dtype, copy=False)


LinalgMatrixExpFunction.op.float64 = LinalgMatrixExpFunction


C.name_memory_errors(LinalgInvFunction, LinalgDetFunction, LinalgSlogdetFunction, LinalgSolveFunction,
                     LinalgSolveTriangularFunction, LinalgMatrixExpFunction)
