"""Factorizations (torch.linalg's cholesky, qr, eigh, svd), batched over leading dims, float32/float64:
numpy.linalg (LAPACK) factorizes, the gradients are torch's (ops/_linalg_common.py), each also written with Tensor
ops for create_graph.

Signs: eigenvectors, singular vectors and QR's (Q, R) are unique only up to a sign per column; LAPACK's choice
can differ between builds (numpy's OpenBLAS, torch's MKL), so the torch references here align torch's signs to
ours before comparing (a sign flip of a column is a gauge: the gradient of a sign-invariant loss is unchanged)."""
from __future__ import annotations

import numpy as np

from ..autograd import Function
from . import _linalg_common as C
from . import _meta as M
from ._onnx_linalg import cholesky_onnx, qr_onnx
from .registry import BadInput, Sample, register_op

NO_ONNX = "ONNX (opset 21) has no {} operator"


def _arg(args, kwargs, i, name, default=None):
    return args[i] if i < len(args) else kwargs.get(name, default)


def _cubic_flops(out, inputs, kwargs):
    a = inputs[0]
    m, n = a.shape[-2:]
    return 2 * int(np.prod(a.shape[:-2], dtype=np.int64)) * m * n * min(m, n)


def _align(torch, ours_cols, theirs_cols):
    """Signs (a (..., k) tensor of +-1) that turn torch's columns into ours."""
    s = torch.sign((ours_cols * theirs_cols).sum(-2))
    return torch.where(s == 0, torch.ones_like(s), s).detach()


# ---- cholesky ----------------------------------------------------------------------------------------------------
def unblocked_cholesky(a):
    """(L, info) of one matrix, LAPACK's potrf meaning of info (the order of the first leading minor that is not
    positive definite, 0 if none); L holds the columns computed before it stopped."""
    n = a.shape[-1]
    L = np.zeros_like(a, dtype=np.float64)
    for j in range(n):
        d = a[j, j] - L[j, :j] @ L[j, :j]
        if not d > 0:
            return L.astype(a.dtype), j + 1
        L[j, j] = np.sqrt(d)
        L[j + 1:, j] = (a[j + 1:, j] - L[j + 1:, :j] @ L[j, :j]) / L[j, j]
    return L.astype(a.dtype), 0


def cholesky_array(A, upper=False, check_errors=True):
    """(L, info): lower (or upper: A's upper triangle read) Cholesky factors; info as LAPACK's per matrix."""
    src = np.swapaxes(A, -1, -2) if upper else A
    info = np.zeros(A.shape[:-2], np.int32)
    try:
        L = np.linalg.cholesky(src)
        if not np.isfinite(L).all():  # numpy passes a NaN through; LAPACK's potrf (torch) stops there
            raise np.linalg.LinAlgError
    except np.linalg.LinAlgError:
        flat = src.reshape((-1,) + src.shape[-2:])
        Ls, infos = zip(*[unblocked_cholesky(m) for m in flat]) if len(flat) else ((), ())
        L = np.stack(Ls).reshape(src.shape) if Ls else np.zeros_like(src)
        info = np.asarray(infos, np.int32).reshape(A.shape[:-2])
        if check_errors and np.any(info > 0):
            where = C.batch_index(info > 0)
            first = int(info.reshape(-1)[np.flatnonzero(info.reshape(-1))[0]])
            raise C.LinAlgError(f"linalg.cholesky:{where} The factorization could not be completed because the "
                                f"input (argument 'A') is not positive-definite (the leading minor of order {first} "
                                "is not positive-definite).") from None
    L = L.astype(A.dtype, copy=False)
    return (np.swapaxes(L, -1, -2) if upper else L), info


def _chol_meta(a, upper=False):
    C.check_matrix(a, "A", "linalg.cholesky")
    return M.MetaArray(a.shape, a.dtype)


def _chol_samples():
    return [Sample((C.spd(4, 4),)), Sample((C.spd(2, 3, 5, 5, seed=1),), name="batched (2,3,5,5)"),
            Sample((C.spd(1, 1, seed=2),), name="1x1"), Sample((C.spd(4, 4, seed=3),), {"upper": True}, "upper"),
            Sample((C.spd(6, 6, seed=4) + np.triu(np.ones((6, 6), np.float32), 1),), name="asymmetric: lower read")]


def _chol_rule(ctx, args, kwargs, g):
    from .registry import _OPS
    upper = _arg(args, kwargs, 1, "upper", False)
    L = _OPS["linalg_cholesky"](args[0], upper=upper)
    return (C.cholesky_backward(C.TS, L, g, upper),)


@register_op("linalg_cholesky", meta=_chol_meta, flops=lambda o, i, k: _cubic_flops(o, i, k) // 6,
             samples=_chol_samples, torch=lambda torch, A, upper=False: torch.linalg.cholesky(A, upper=upper),
             differentiable_backward=_chol_rule,
             bad_inputs=lambda: [C.square_bad(),
                                 BadInput((-np.eye(3, dtype=np.float32),), {}, C.LinAlgError, "not positive-definite"),
                                 BadInput((C.spd(3, 3),), {"upper": 1}, TypeError, "upper")],
             onnx=cholesky_onnx, tol=(1e-4, 1e-5))
class LinalgCholeskyFunction(Function):
    """L with A = L L^T (upper: U^T U); gradient torch's L^-T Phi(L^T gL) L^-1, symmetric."""

    exact_dtype = True

    @staticmethod
    def forward(ctx, A, upper=False):
        upper = C.check_bool(upper, "upper", "linalg.cholesky")
        C.check_matrix(A, "A", "linalg.cholesky")
        L, _ = cholesky_array(A, upper)
        ctx.save_for_backward(L)
        ctx.upper = upper
        return L

    @staticmethod
    def backward(ctx, g):
        (L,) = ctx.saved_tensors
        return C.cholesky_backward(C.NP, L, g, ctx.upper).astype(g.dtype, copy=False)


# ---- qr ----------------------------------------------------------------------------------------------------------
def qr_shapes(shape, mode):
    m, n = shape[-2:]
    k = min(m, n)
    batch = tuple(shape[:-2])
    if mode == "reduced":
        return batch + (m, k), batch + (k, n)
    if mode == "complete":
        return batch + (m, m), batch + (m, n)
    if mode == "r":
        return (0,), batch + (k, n)
    raise ValueError(f"linalg.qr: argument 'mode' must be 'reduced', 'complete' or 'r', got {mode!r}")


def _qr_meta(a, mode="reduced"):
    C.check_matrix(a, "A", "linalg.qr", square=False)
    q, r = qr_shapes(a.shape, mode)
    return M.MetaArray(q, a.dtype), M.MetaArray(r, a.dtype)


def _qr_samples():
    rng = np.random.default_rng(0)

    def m(*s):
        return rng.uniform(-1, 1, s).astype(np.float32)
    return [Sample((m(5, 3),), name="tall"), Sample((m(3, 5),), name="wide"),
            Sample((m(2, 3, 5, 5),), name="batched (2,3,5,5)"), Sample((m(1, 1),), name="1x1"),
            Sample((m(4, 4),), {"mode": "complete"}, "complete, square"),
            Sample((m(5, 3),), {"mode": "complete"}, "complete, tall: no gradient (torch neither)", grad=()),
            Sample((m(3, 5),), {"mode": "complete"}, "complete, wide"),
            Sample((m(5, 3),), {"mode": "r"}, "mode r: no gradient (torch neither)", grad=())]


def _qr_torch(torch, A, mode="reduced"):
    q, r = torch.linalg.qr(A, mode=mode)
    if mode == "r":
        return q, r
    ours = np.linalg.qr(A.detach().numpy(), mode=mode)
    s = _align(torch, torch.from_numpy(ours[0]), q)  # signs per column of Q = per row of R
    q, r = q * s.unsqueeze(-2), r * s.unsqueeze(-1)
    # a rank-deficient A: the columns of Q past its rank are any orthonormal completion (LAPACK's and torch's
    # builds pick different ones), and R's rows there are those columns times A: compare LAPACK's choice there
    k = min(r.shape[-2], r.shape[-1])
    diag = torch.diagonal(r, dim1=-2, dim2=-1)[..., :k].abs()
    tol = max(A.shape[-2:]) * torch.finfo(A.dtype).eps * r.abs().amax(dim=(-2, -1), keepdim=True).squeeze(-1)
    free = diag <= tol
    if bool(free.any()) and not A.requires_grad:
        qo, ro = torch.from_numpy(ours[0]).to(q.dtype), torch.from_numpy(ours[1]).to(r.dtype)
        q = q.clone()
        r = r.clone()
        q[..., :k] = torch.where(free.unsqueeze(-2), qo[..., :k], q[..., :k])
        r[..., :k, :] = torch.where(free.unsqueeze(-1), ro[..., :k, :], r[..., :k, :])
    return q, r


def _qr_check_grad(q_shape, r_shape, mode):
    if mode == "r":
        raise RuntimeError("linalg.qr: the derivative of linalg.qr depends on Q, which is not computed when "
                           "mode='r'; use mode='reduced' to differentiate through it (torch neither)")
    if mode == "complete" and q_shape[-2] > r_shape[-1]:
        raise RuntimeError("linalg.qr: the QR decomposition is not differentiable when mode='complete' and "
                           "nrows > ncols (torch neither)")


def _qr_rule(ctx, args, kwargs, gq, gr):
    from .registry import _OPS
    mode = _arg(args, kwargs, 1, "mode", "reduced")
    q, r = _OPS["linalg_qr"](args[0], mode=mode)
    _qr_check_grad(q.shape, r.shape, mode)
    return (C.qr_backward(C.TS, q, r, gq, gr),)


@register_op("linalg_qr", meta=_qr_meta, flops=_cubic_flops, samples=_qr_samples, torch=_qr_torch,
             differentiable_backward=_qr_rule,
             bad_inputs=lambda: [BadInput((np.ones((3, 2), np.float32),), {"mode": "full"}, ValueError, "mode"),
                                 BadInput((np.ones(3, np.float32),), {}, ValueError, "'A'")],
             onnx=qr_onnx, tol=(1e-4, 1e-5))
class LinalgQrFunction(Function):
    """(Q, R), A = QR (LAPACK geqrf's signs); gradient torch's (m >= n, and m < n through the square block)."""

    exact_dtype = True

    @staticmethod
    def forward(ctx, A, mode="reduced"):
        C.check_matrix(A, "A", "linalg.qr", square=False)
        qr_shapes(A.shape, mode)
        if mode == "r":
            r = np.linalg.qr(A, mode="r") if A.size else np.zeros(qr_shapes(A.shape, mode)[1], A.dtype)
            q = np.zeros((0,), A.dtype)
        else:
            q, r = np.linalg.qr(A, mode=mode)
        ctx.save_for_backward(q, r)
        ctx.mode = mode
        return q.astype(A.dtype, copy=False), r.astype(A.dtype, copy=False)

    @staticmethod
    def backward(ctx, gq, gr):
        q, r = ctx.saved_tensors
        _qr_check_grad(q.shape, r.shape, ctx.mode)
        return C.qr_backward(C.NP, q, r, gq, gr).astype(gr.dtype, copy=False)


# ---- eigh --------------------------------------------------------------------------------------------------------
def _eigh_meta(a, UPLO="L"):
    C.check_matrix(a, "A", "linalg.eigh")
    return M.MetaArray(a.shape[:-1], a.dtype), M.MetaArray(a.shape, a.dtype)


def _sym(*shape, seed=0):
    a = np.random.default_rng(seed).uniform(-1, 1, size=shape)
    return (a + np.swapaxes(a, -1, -2)).astype(np.float32)


def _eigh_samples():
    return [Sample((_sym(4, 4),)), Sample((_sym(2, 3, 5, 5, seed=1),), name="batched (2,3,5,5)"),
            Sample((_sym(1, 1, seed=2),), name="1x1"), Sample((_sym(4, 4, seed=3),), {"UPLO": "U"}, "UPLO=U"),
            Sample((_sym(5, 5, seed=4) + np.tril(np.ones((5, 5), np.float32), -1),), name="asymmetric: lower read")]


def _eigh_torch(torch, A, UPLO="L"):
    w, v = torch.linalg.eigh(A, UPLO=UPLO)
    ours = np.linalg.eigh(A.detach().numpy(), UPLO=UPLO)[1]
    return w, v * _align(torch, torch.from_numpy(ours), v).unsqueeze(-2)


def _check_uplo(UPLO):
    """'L' or 'U' (torch takes the lower-case letters too)."""
    if UPLO not in ("L", "U", "l", "u"):
        raise ValueError(f"linalg.eigh: argument 'UPLO' must be 'L' or 'U', got {UPLO!r}")
    return UPLO.upper()


def _eigh_rule(ctx, args, kwargs, gl, gv):
    from .registry import _OPS
    w, v = _OPS["linalg_eigh"](args[0], UPLO=_arg(args, kwargs, 1, "UPLO", "L"))
    return (C.eigh_backward(C.TS, w, v, gl, gv),)


@register_op("linalg_eigh", meta=_eigh_meta, flops=lambda o, i, k: 5 * _cubic_flops(o, i, k), samples=_eigh_samples,
             torch=_eigh_torch, differentiable_backward=_eigh_rule,
             bad_inputs=lambda: [C.square_bad(),
                                 BadInput((np.eye(3, dtype=np.float32),), {"UPLO": "X"}, ValueError, "UPLO")],
             gaps={"onnx": NO_ONNX.format("symmetric eigendecomposition")}, tol=(1e-4, 1e-5))
class LinalgEighFunction(Function):
    """(eigenvalues ascending, eigenvectors as columns) of a symmetric matrix (only its UPLO triangle read)."""

    exact_dtype = True

    @staticmethod
    def forward(ctx, A, UPLO="L"):
        UPLO = _check_uplo(UPLO)
        C.check_matrix(A, "A", "linalg.eigh")
        w, v = C.lapack(np.linalg.eigh, A, "linalg.eigh", UPLO=UPLO)
        ctx.save_for_backward(w, v)
        return w.astype(A.dtype, copy=False), v.astype(A.dtype, copy=False)

    @staticmethod
    def backward(ctx, gl, gv):
        w, v = ctx.saved_tensors
        return C.eigh_backward(C.NP, w, v, gl, gv).astype(gv.dtype, copy=False)


# ---- svd ---------------------------------------------------------------------------------------------------------
def svd_shapes(shape, full_matrices):
    m, n = shape[-2:]
    k = min(m, n)
    b = tuple(shape[:-2])
    return (b + (m, m if full_matrices else k)), b + (k,), (b + (n if full_matrices else k, n))


def _svd_meta(a, full_matrices=True):
    C.check_matrix(a, "A", "linalg.svd", square=False)
    return tuple(M.MetaArray(s, a.dtype) for s in svd_shapes(a.shape, full_matrices))


def _svd_samples():
    rng = np.random.default_rng(0)

    def m(*s):
        return rng.uniform(-1, 1, s).astype(np.float32)
    return [Sample((m(5, 3),), {"full_matrices": False}, "tall"), Sample((m(3, 5),), {"full_matrices": False}, "wide"),
            Sample((m(2, 3, 5, 5),), {"full_matrices": False}, "batched (2,3,5,5)"),
            Sample((m(1, 1),), {"full_matrices": False}, "1x1"),
            Sample((m(4, 4),), {}, "full_matrices, square"),
            Sample((m(2, 4, 3),), {"full_matrices": False}, "batched tall")]


def _svd_torch(torch, A, full_matrices=True):
    u, s, vh = torch.linalg.svd(A, full_matrices=full_matrices)
    ours = np.linalg.svd(A.detach().numpy(), full_matrices=full_matrices)[0]
    k = s.shape[-1]
    sg = _align(torch, torch.from_numpy(ours[..., :k]), u[..., :k])
    su = torch.cat([sg, torch.ones_like(u[..., 0, k:])], -1) if u.shape[-1] > k else sg
    sv = torch.cat([sg, torch.ones_like(vh[..., k:, 0])], -1) if vh.shape[-2] > k else sg
    return u * su.unsqueeze(-2), s, vh * sv.unsqueeze(-1)


def _svd_rule(ctx, args, kwargs, gu, gs, gvh):
    from .registry import _OPS
    full = _arg(args, kwargs, 1, "full_matrices", True)
    u, s, vh = _OPS["linalg_svd"](args[0], full_matrices=full)
    if full:
        k = s.shape[-1]
        u, gu, vh, gvh = u.narrow(-1, 0, k), gu.narrow(-1, 0, k), vh.narrow(-2, 0, k), gvh.narrow(-2, 0, k)
    return (C.svd_backward(C.TS, u, s, vh, gu, gs, gvh),)


@register_op("linalg_svd", meta=_svd_meta, flops=lambda o, i, k: 10 * _cubic_flops(o, i, k), samples=_svd_samples,
             torch=_svd_torch, differentiable_backward=_svd_rule,
             bad_inputs=lambda: [BadInput((np.ones(3, np.float32),), {}, ValueError, "'A'"),
                                 BadInput((np.ones((3, 2), np.float32),), {"full_matrices": "True"}, TypeError,
                                          "full_matrices")],
             gaps={"onnx": NO_ONNX.format("SVD")}, tol=(1e-4, 1e-5))
class LinalgSvdFunction(Function):
    """(U, S, Vh), A = U diag(S) Vh, S descending; gradient torch's for the reduced form (full_matrices: the
    first min(m, n) columns of U / rows of Vh, as torch's)."""

    exact_dtype = True

    @staticmethod
    def forward(ctx, A, full_matrices=True):
        full_matrices = C.check_bool(full_matrices, "full_matrices", "linalg.svd")
        C.check_matrix(A, "A", "linalg.svd", square=False)
        u, s, vh = C.lapack(np.linalg.svd, A, "linalg.svd", full_matrices=full_matrices)
        ctx.save_for_backward(u, s, vh)
        ctx.full = bool(full_matrices)
        return u.astype(A.dtype, copy=False), s.astype(A.dtype, copy=False), vh.astype(A.dtype, copy=False)

    @staticmethod
    def backward(ctx, gu, gs, gvh):
        u, s, vh = ctx.saved_tensors
        if ctx.full:
            k = s.shape[-1]
            u, gu, vh, gvh = u[..., :k], gu[..., :k], vh[..., :k, :], gvh[..., :k, :]
        return C.svd_backward(C.NP, u, s, vh, gu, gs, gvh).astype(gs.dtype, copy=False)


for _fn in (LinalgCholeskyFunction, LinalgQrFunction, LinalgEighFunction, LinalgSvdFunction):
    _fn.op.float64 = _fn  # numpy in the input's dtype


C.name_memory_errors(LinalgCholeskyFunction, LinalgQrFunction, LinalgEighFunction, LinalgSvdFunction)
